"""Recipe study runner (studies/recipe.py) bookkeeping without training: grid, per-run configs, docs/recipe.md."""

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from fer.config import config_to_dict
from fer.data.paths import REPO_ROOT
from fer.train import check_compatible
from studies import common
from studies import recipe as study

BASE = REPO_ROOT / "configs" / "fer2013_mini_xception_cosine.yaml"


def test_grid_has_every_option_once_per_dataset_and_seed():
    runs = study.grid(("fer2013", "rafdb"), seeds=(0, 1), epochs=15, combine=[["ema", "mixup"]])
    options = study.recipe_options(15)
    one_dataset = sum(len(datasets) == 1 for datasets in study.ONLY_ON.values())  # distill on FER2013, colour on RAF-DB
    per_seed = 2 * (len(options) + 1) - one_dataset  # every option and the combination on both datasets
    assert len(runs) == 2 * per_seed and len({run.name for run in runs}) == len(runs)
    assert all(run.seed == 0 for run in runs[:per_seed]), "seed-major"
    names = {run.name for run in runs}
    assert "fer2013/cosine_distance-s10-m0.35/seed0" in names, "the baseline is the ablation's reference run name"
    assert "rafdb/cosine_distance-s10-m0.35-ema+mixup/seed1" in names
    assert "fer2013/cosine_distance-s10-m0.35-distill/seed0" in names
    assert not any("rafdb" in name and "distill" in name for name in names)
    assert "rafdb/cosine_distance-s10-m0.35-colour_size100/seed0" in names
    assert not any("fer2013" in name and "colour" in name for name in names), "FER2013 is gray at source"
    with pytest.raises(ValueError, match="unknown recipe option"):
        study.grid(("rafdb",), (0,), 15, names=["emma"])
    assert study.grid(("rafdb",), (0,), 15, names=[], combine=[["ema", "ldam"]])[0].recipe == "ema+ldam"


def test_each_run_changes_only_its_options_keys(tmp_path):
    base_raw = yaml.safe_load(BASE.read_text())
    runs = study.grid(("fer2013",), (0,), epochs=15, combine=[["strong_aug", "sgd_warmup_cosine"]])
    baseline = config_to_dict(common.run_config(base_raw, runs[0], 15, tmp_path))
    assert runs[0].recipe == "" and runs[0].options == ()
    for run in runs[1:]:
        cfg = common.run_config(base_raw, run, 15, tmp_path)
        check_compatible(cfg)
        changed = {f"{section}.{key}" for section, values in config_to_dict(cfg).items() for key, value in values.items()
                   if baseline[section][key] != value}
        wanted = {option.split("=")[0] for option in run.options}
        assert changed and changed <= wanted, (run.recipe, changed, wanted)  # an option equal to the base changes nothing
    assert common.run_config(base_raw, runs[-1], 15, tmp_path).train.optimizer == "sgd"


def fake_row(run, accuracy, epochs=15, cpu_s=120.0):
    return {"name": run.name, "run": dataclasses.asdict(run), "settings": common.settings(BASE, epochs, None),
            "command": "python benchmarks/recipe.py --test", "threads": 1, "accuracy": accuracy,
            "macro_f1": accuracy - 0.1, "balanced_accuracy": accuracy - 0.05, "cpu_s": cpu_s, "wall_s": cpu_s}


def test_markdown_compares_each_option_with_the_baseline_and_tabulates_the_curve():
    rows = []
    for seed, shift in enumerate((0.0, 0.01, 0.02)):
        for run in study.grid(("rafdb",), (seed,), 15, names=["baseline", "ema"]):
            rows.append(fake_row(run, 0.70 + shift + (0.05 if run.recipe == "ema" else 0.0)))
    curve_run = study.grid(("rafdb",), (0,), 30, names=["ema"])[0]
    text = study.recipe_markdown(rows, {30: [fake_row(curve_run, 0.8, epochs=30, cpu_s=240.0)]}, "runs/recipe")
    assert "| baseline | 0, 1, 2 | 71.00 ± 1.00 | 61.00 ± 1.00 | 66.00 ± 1.00 | 2.0 |" in text
    assert "| ema | 0, 1, 2 | 76.00 ± 1.00 |" in text
    assert "- ema against the baseline: accuracy 76.00 ± 1.00 % against 71.00 ± 1.00 %: +5.00 pp, more than twice" in text
    assert "| RAF-DB | mini_xception | ema | 30 | 0 | 80.00 | 70.00 | 75.00 | 4.0 |" in text
    assert "Smoke settings" not in text
    assert "No finished runs yet" in study.recipe_markdown([], {}, "x")


def test_a_combination_is_compared_with_each_of_its_parts():
    runs = study.grid(("fer2013",), (0, 1), 15, names=["baseline", "ema"], combine=[["ema", "ldam"]])
    accuracy = {"": 0.60, "ema": 0.62, "ema+ldam": 0.63}
    rows = [fake_row(run, accuracy[run.recipe] + 0.01 * run.seed) for run in runs]
    text = study.recipe_markdown(rows, {}, "runs/recipe")
    assert "- ema+ldam against ema alone: accuracy 63.50 ± 0.71 % against 62.50 ± 0.71 %: +1.00 pp" in text
    assert "Paired by seed (0, 1): accuracy +1.00, +1.00 pp (higher in 2 of 2)" in text
    assert "against ldam alone" not in text, "a part with no runs of its own is not compared"


def test_softmax_reference_runs_table3s_softmax_endpoint_and_the_curve_compares_against_it(tmp_path):
    runs = study.grid(("rafdb",), (0, 1), 45, names=["softmax", "ldam_drw"])
    assert [run.name for run in runs] == ["rafdb/softmax-keras/seed0", "rafdb/cosine_distance-s10-m0.35-ldam_drw/seed0",
                                          "rafdb/softmax-keras/seed1", "rafdb/cosine_distance-s10-m0.35-ldam_drw/seed1"]
    cfg = common.run_config(yaml.safe_load(BASE.read_text()), runs[0], 45, tmp_path)
    assert (cfg.loss.name, cfg.model.head, cfg.loss.class_margins) == ("softmax", "keras", "none")
    with pytest.raises(ValueError, match="softmax\\+ldam: class-aware margins belong to the cosine-distance loss"):
        study.grid(("rafdb",), (0,), 45, names=[], combine=[["softmax", "ldam"]])
    with pytest.raises(ValueError, match="unknown recipe option"):
        study.grid(("rafdb",), (0,), 45, names=[], combine=[["ema", "softmax"]])
    rows = [fake_row(run, 0.80 if run.loss == "softmax" else 0.70 + 0.01 * run.seed, epochs=45) for run in runs]
    text = study.recipe_markdown([], {45: rows}, "runs/recipe")
    assert "| RAF-DB | mini_xception | softmax | 45 | 0, 1 | 80.00 ± 0.00 |" in text
    assert "- RAF-DB, mini_xception, 45 epochs, cosine-distance ldam_drw against softmax: accuracy 70.50 ± 0.71 % against 80.00 ± 0.00 %: " \
           "-9.50 pp" in text
    assert "Paired by seed (0, 1): accuracy -10.00, -9.00 pp (higher in 0 of 2)" in text


def test_softmax_with_a_recipe_holds_the_recipe_fixed_and_the_cosine_recipe_is_compared_with_it(tmp_path):
    runs = study.grid(("fer2013", "rafdb"), (0,), 45, names=["softmax", "distill"], combine=[["softmax", "distill"]])
    assert [run.name for run in runs] == ["fer2013/softmax-keras/seed0", "fer2013/softmax-keras-distill/seed0",
                                          "fer2013/cosine_distance-s10-m0.35-distill/seed0", "rafdb/softmax-keras/seed0"]
    cfg = common.run_config(yaml.safe_load(BASE.read_text()), runs[1], 45, tmp_path)
    assert (cfg.loss.name, cfg.model.head, cfg.train.teacher) == ("softmax", "keras", ["fer2013"])
    accuracy = {"softmax-keras": 0.60, "softmax-keras-distill": 0.66, "cosine_distance-s10-m0.35-distill": 0.64}
    rows = [fake_row(run, accuracy[run.variant], epochs=45) for run in runs[:3]]
    text = study.recipe_markdown([], {45: rows}, "runs/recipe")
    assert "| FER2013 | mini_xception | softmax+distill | 45 | 0 | 66.00 |" in text
    assert "- FER2013, mini_xception, 45 epochs, cosine-distance distill against softmax: accuracy 64.00 % against " \
           "60.00 %: +4.00 pp" in text
    assert "- FER2013, mini_xception, 45 epochs, cosine-distance distill against softmax+distill: accuracy 64.00 % " \
           "against 66.00 %: -2.00 pp" in text
    assert "cosine-distance softmax" not in text, "a softmax run is a reference, never a cosine-distance recipe"
    with pytest.raises(ValueError, match="name the options"):
        study.grid(("fer2013",), (0,), 45, names=[], combine=[["softmax"]])


def test_a_stronger_model_runs_table3s_linear_softmax_and_is_compared_only_with_itself(tmp_path):
    runs = study.grid(("rafdb",), (0,), 45, names=["softmax", "baseline"], model="resnet_small")
    assert [run.name for run in runs] == ["rafdb/resnet_small/softmax-linear/seed0",
                                          "rafdb/resnet_small/cosine_distance-s10-m0.35/seed0"]
    cfg = common.run_config(yaml.safe_load(BASE.read_text()), runs[0], 45, tmp_path)
    assert (cfg.model.name, cfg.loss.name, cfg.model.head) == ("resnet_small", "softmax", "linear")
    mini = study.grid(("rafdb",), (0,), 45, names=["softmax", "baseline"])
    rows = [fake_row(run, 0.80 if run.loss == "softmax" else 0.75, epochs=45) for run in runs]
    rows += [fake_row(run, 0.60 if run.loss == "softmax" else 0.70, epochs=45) for run in mini]
    text = study.recipe_markdown([], {45: rows}, "runs/recipe")
    assert "| RAF-DB | resnet_small | softmax | 45 | 0 | 80.00 |" in text
    assert "- RAF-DB, resnet_small, 45 epochs, cosine-distance baseline against softmax: accuracy 75.00 % against " \
           "80.00 %: -5.00 pp" in text
    assert "- RAF-DB, mini_xception, 45 epochs, cosine-distance baseline against softmax: accuracy 70.00 % against " \
           "60.00 %: +10.00 pp" in text


def test_a_resumed_runs_cpu_time_counts_the_part_before_the_resume():
    run = study.grid(("rafdb",), (0,), 15, names=["baseline"])[0]
    straight = fake_row(run, 0.7, cpu_s=600.0) | {"train_seconds": 580.0}
    resumed = fake_row(run, 0.7, cpu_s=200.0) | {"train_seconds": 580.0}  # trained 380 s before the interruption
    assert study._cpu_minutes([straight]) == "10.0"
    assert study._cpu_minutes([resumed]) == "9.7*"  # 200 + (580 - 200) s: short by the finishing process's evaluation
    assert "| baseline | 0 | 70.00 | 60.00 | 65.00 | 9.7* |" in study.recipe_markdown([resumed], {}, "runs/recipe")


def test_committed_recipe_page_is_rebuilt_from_the_committed_records():
    expected = study.recipe_markdown(*study.collect_study(REPO_ROOT / "docs" / "runs" / "recipe"), "docs/runs/recipe")
    assert (REPO_ROOT / "docs" / "recipe.md").read_text() == expected, \
        "docs/recipe.md is stale: python studies/recipe.py --results-only --root docs/runs/recipe"


def test_committed_commands_can_be_pasted_on_another_machine():
    """The page lists each record's command; a home folder spelled out (/root/...) would only run where it was made."""
    rows, curves = study.collect_study(REPO_ROOT / "docs" / "runs" / "recipe")
    commands = {row["command"] for row in rows + [row for rows_ in curves.values() for row in rows_]}
    assert commands and not [c for c in commands if "/root/" in c or "/home/" in c]
    assert study._home_as_tilde(f"x --root {Path.home()}/fer-runs/recipe") == "x --root ~/fer-runs/recipe"


@pytest.mark.parametrize("dataset", ["fer2013", "rafdb"])
def test_the_small_resnet_configs_are_the_studys_measured_runs(dataset, tmp_path):
    """configs/<dataset>_resnet_cosine.yaml trains exactly what the study's 45-epoch ResNet runs trained (seed 0), so
    the records in docs/runs/recipe/curve-45ep are what the config gives; only bookkeeping keys may differ."""
    from fer.config import load_config

    run = common.Run(dataset, "cosine_distance", "cosine", 0, model="resnet_small")
    measured = config_to_dict(common.run_config(yaml.safe_load(BASE.read_text()), run, 45, tmp_path, threads=1))
    shipped = config_to_dict(load_config(REPO_ROOT / "configs" / f"{dataset}_resnet_cosine.yaml"))
    for side in (measured, shipped):
        for key in ("out_dir", "checkpoint_every"):
            side["train"].pop(key)
    assert shipped == measured
    assert (REPO_ROOT / "docs" / "runs" / "recipe" / "curve-45ep" / run.name / "run.json").is_file()


def _pins_for(path: Path, commit: str = "a8ecbbc") -> dict:
    return {"fer2013": (study.sha256_of(path), commit)}


def test_the_distillation_teacher_is_the_shipped_name_while_the_shipped_file_is_the_pinned_one(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "fer2013.pt").write_bytes(b"the teacher")
    pins = _pins_for(weights / "fer2013.pt")
    assert study.pinned_teacher("fer2013", tmp_path / "teachers", weights, pins) == "fer2013"
    assert not (tmp_path / "teachers").exists()
    runs = study.grid(("fer2013",), (0,), 45, names=["distill"], teachers={"fer2013": "/x/teacher.pt"})
    assert runs[0].options == ("train.teacher=/x/teacher.pt",)


def test_a_reshipped_teacher_is_replaced_by_the_pinned_file_from_git_history(tmp_path):
    sha, commit = study.TEACHER_PINS["fer2013"]
    try:
        subprocess.run(["git", "cat-file", "-e", f"{commit}:fer/weights/fer2013.pt"], cwd=REPO_ROOT, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"this checkout lacks the git history of commit {commit}")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "fer2013.pt").write_bytes(b"a newer fer2013")
    teacher = study.pinned_teacher("fer2013", tmp_path / "teachers", weights)
    assert Path(teacher).parent == tmp_path / "teachers" and study.sha256_of(teacher) == sha
    assert study.pinned_teacher("fer2013", tmp_path / "teachers", weights) == teacher  # taken out once, then reused


def test_a_wrong_pinned_file_or_a_missing_commit_is_a_clear_error(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "fer2013.pt").write_bytes(b"a newer fer2013")
    (tmp_path / "old.pt").write_bytes(b"the old teacher")
    pins = _pins_for(tmp_path / "old.pt", commit="0000000")
    with pytest.raises(ValueError, match="git show 0000000:fer/weights/fer2013.pt failed"):
        study.pinned_teacher("fer2013", tmp_path / "teachers", weights, pins)
    sha = pins["fer2013"][0]
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / f"fer2013-{sha[:12]}.pt").write_bytes(b"something else")
    with pytest.raises(ValueError, match=f"fer2013-{sha[:12]}.pt: sha256 .* teacher for fer2013 is {sha[:12]}"):
        study.pinned_teacher("fer2013", tmp_path / "teachers", weights, pins)
