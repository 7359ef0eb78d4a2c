"""The loss question's verdict (studies.loss_question) from run records: met, not met, not known."""

import dataclasses

from studies.common import Run
from studies.loss_question import longer_schedule_markdown

SETTINGS = {"base": "configs/fer2013_mini_xception_cosine.yaml", "epochs": 45, "max_per_class": None}


def row(dataset, loss, seed, accuracy, macro_f1, recipe=""):
    run = Run(dataset, loss, "cosine" if loss == "cosine_distance" else "keras", seed, recipe=recipe)
    return {"name": run.name, "run": dataclasses.asdict(run), "settings": SETTINGS, "threads": 1,
            "accuracy": accuracy, "macro_f1": macro_f1, "balanced_accuracy": macro_f1, "cpu_s": 1.0, "wall_s": 1.0}


def rows_for(dataset, softmax, cosine, recipe="ldam", seeds=(0, 1, 2)):
    """Three seeds a side, means at the given (accuracy, macro-F1), a spread of 0.01 (one point)."""
    found = []
    for seed, wobble in zip(seeds, (-0.01, 0.0, 0.01)):
        found.append(row(dataset, "softmax", seed, softmax[0] + wobble, softmax[1] + wobble))
        found.append(row(dataset, "cosine_distance", seed, cosine[0] + wobble, cosine[1] + wobble, recipe))
    return found


def aim_lines(rows):
    lines = longer_schedule_markdown(rows, 45, "records")
    return [line for line in lines[lines.index("**The aim** (a cosine-distance configuration above softmax on accuracy "
                                               "and on macro-F1, on both datasets, by more than the seed spread):") + 1:]
            if line]


def test_aim_met_only_above_the_spread_on_both_metrics_and_both_datasets():
    wins = rows_for("rafdb", (0.78, 0.66), (0.80, 0.68)) + rows_for("fer2013", (0.65, 0.60), (0.67, 0.62))
    assert aim_lines(wins) == ["- mini_xception, cosine-distance, class-aware margins (ldam): met."]
    # 1.5 points above with a 1-point spread: a win; 0.5 points: within the spread, so not a win
    within = rows_for("rafdb", (0.78, 0.66), (0.795, 0.665)) + rows_for("fer2013", (0.65, 0.60), (0.67, 0.62))
    assert aim_lines(within) == ["- mini_xception, cosine-distance, class-aware margins (ldam): not met (short on RAF-DB)."]


def test_single_seeds_and_missing_datasets_are_not_known_not_met():
    one_seed = rows_for("rafdb", (0.78, 0.66), (0.80, 0.68), seeds=(0,))
    lines = longer_schedule_markdown(one_seed, 45, "records")
    assert any("by more than the spread: not known (a single seed)" in line for line in lines)
    assert aim_lines(one_seed) == ["- mini_xception, cosine-distance, class-aware margins (ldam): not known yet "
                                   "(not measured on FER2013; a single seed on RAF-DB)."]


def test_a_training_option_is_compared_with_softmax_trained_the_same_way():
    rows = [row("fer2013", "softmax", 0, 0.70, 0.60), row("fer2013", "softmax", 0, 0.60, 0.50, "distill"),
            row("fer2013", "cosine_distance", 0, 0.65, 0.55, "distill")]
    lines = longer_schedule_markdown(rows, 45, "records")
    assert any(line.startswith("- FER2013, mini_xception, cosine-distance, distill against softmax + distill: accuracy "
                               "65.00 % against 60.00 %") for line in lines)
    assert longer_schedule_markdown([], 45, "records") == []
