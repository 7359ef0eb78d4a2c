"""Ablation runner bookkeeping without training: the grid, per-run configs, skipping finished runs, the markdown."""

import dataclasses
import json

import pytest

from fer.config import config_from_dict
from fer.data.paths import REPO_ROOT
from fer.train import check_compatible
from studies import ablation, common

BASE = REPO_ROOT / "configs" / "fer2013_mini_xception_cosine.yaml"


def test_grid_is_seed_major_and_shares_the_reference_run():
    runs = ablation.grid(("rafdb", "fer2013"), seeds=(0, 1), tables=(1, 2, 3))
    per_seed_dataset = 5 + len(ablation.DEFAULT_MARGINS) + len(ablation.DEFAULT_SCALES) - 2  # (s=10, m=0.35) once
    assert len(runs) == 2 * 2 * per_seed_dataset, len(runs)
    assert len({run.name for run in runs}) == len(runs), "run names must be unique"
    assert all(run.seed == 0 for run in runs[:2 * per_seed_dataset]), "all seed-0 runs come first"
    assert ablation.grid(("rafdb",), (0,), (3,), softmax_heads=("linear",))[0].name == "rafdb/softmax-linear/seed0"
    with pytest.raises(ValueError, match="table"):
        ablation.grid(tables=(4,))


def test_run_config_changes_only_the_run_fields(tmp_path):
    import yaml

    base_raw = yaml.safe_load(BASE.read_text())
    for run in ablation.grid(("rafdb",), (3,), (1, 2, 3)):
        cfg = common.run_config(base_raw, run, 7, tmp_path / run.name, max_per_class=20)
        check_compatible(cfg)
        assert (cfg.data.dataset, cfg.loss.name, cfg.model.head, cfg.train.seed) == (run.dataset, run.loss, run.head, 3)
        assert (cfg.loss.scale, cfg.loss.margin, cfg.train.epochs, cfg.data.max_per_class) == (run.scale, run.margin, 7, 20)
        assert cfg.train.out_dir == str(tmp_path / run.name)
        assert cfg.augment == config_from_dict(base_raw).augment, "augmentation must be the base config's"


def test_run_config_keeps_the_papers_uniform_margin_under_a_base_with_class_margins(tmp_path):
    import yaml

    base_raw = yaml.safe_load(BASE.read_text())
    base_raw["loss"]["class_margins"] = "ldam"
    for run in ablation.grid(("rafdb",), (0,), (3,)):
        cfg = common.run_config(base_raw, run, 7, tmp_path / run.name)
        check_compatible(cfg)  # softmax with class-aware margins would be refused here
        assert cfg.loss.class_margins == "none", run.name
    ldam = common.Run("rafdb", "cosine_distance", "cosine", 0, recipe="ldam", options=("loss.class_margins=ldam",))
    assert common.run_config(base_raw, ldam, 7, tmp_path / "ldam").loss.class_margins == "ldam"


def fake_row(run, accuracy, settings):
    return {"name": run.name, "run": dataclasses.asdict(run), "settings": settings, "command": "ablate --test",
            "threads": 2, "accuracy": accuracy, "macro_f1": accuracy - 0.1, "balanced_accuracy": accuracy - 0.05,
            "cpu_s": 100.0, "wall_s": 50.0}


def test_finished_runs_are_skipped_and_other_settings_refused(tmp_path):
    run = common.Run("rafdb", "softmax", "linear", 0)
    settings = common.settings(BASE, 2, None)
    (tmp_path / run.name).mkdir(parents=True)
    (tmp_path / run.name / "run.json").write_text(json.dumps(fake_row(run, 0.5, settings)))
    assert common.run_grid([run], BASE, tmp_path, epochs=2) == [], "a finished run must not be trained again"
    with pytest.raises(ValueError, match="another --root"):
        common.run_grid([run], BASE, tmp_path, epochs=3)


def test_results_markdown_from_run_files(tmp_path):
    settings = common.settings(BASE, 30, None)
    rows = []
    for seed, (soft, cos) in enumerate(((0.60, 0.70), (0.62, 0.71), (0.64, 0.72))):
        rows.append(fake_row(common.Run("rafdb", "softmax", "linear", seed), soft, settings))
        rows.append(fake_row(common.Run("rafdb", "cosine_distance", "cosine", seed), cos, settings))
        rows.append(fake_row(common.Run("rafdb", "cosine_distance", "cosine", seed, 10.0, 0.2), cos - 0.01, settings))
    for row in rows:
        (tmp_path / row["name"]).mkdir(parents=True)
        (tmp_path / row["name"] / "run.json").write_text(json.dumps(row))
    text = ablation.write_results(tmp_path, tmp_path / "results.md")
    assert (tmp_path / "results.md").read_text() == text
    assert "| softmax | linear | 0, 1, 2 | 62.00 ± 2.00 |" in text, text
    assert "| 0.2 | 0, 1, 2 | 70.00 ± 1.00 |" in text and "margin grid run: 0.2, 0.35" in text, text
    assert "+9.00 pp, more than twice the larger seed standard deviation (2.00 pp)" in text, text
    assert "ablate --test" in text and "Smoke settings" not in text
    assert "0.25 CPU-hours" in text, text  # 9 runs x 100 CPU-s


def test_stronger_models_run_only_the_endpoints_and_keep_old_names(tmp_path):
    import yaml

    runs = ablation.grid(("rafdb",), (0,), (3,), softmax_heads=("keras",), stronger_models=("resnet_small",))
    names = [run.name for run in runs]
    assert "rafdb/softmax-keras/seed0" in names, "mini-Xception run names must not change (finished runs are reused)"
    assert [n for n in names if "resnet_small" in n] == ["rafdb/resnet_small/softmax-linear/seed0",
                                                        "rafdb/resnet_small/cosine_distance-s10-m0.35/seed0"]
    cfg = common.run_config(yaml.safe_load(BASE.read_text()), runs[-1], 3, tmp_path)
    assert (cfg.model.name, cfg.model.head, cfg.loss.name) == ("resnet_small", "cosine", "cosine_distance")
    with pytest.raises(ValueError, match="stronger model 'resnet_huge'"):
        ablation.grid(stronger_models=("resnet_huge",))


def test_results_markdown_reports_stronger_models_apart(tmp_path):
    settings = common.settings(BASE, 30, None)
    rows = []
    for seed in range(3):
        rows.append(fake_row(common.Run("rafdb", "softmax", "keras", seed), 0.60 + 0.01 * seed, settings))
        rows.append(fake_row(common.Run("rafdb", "cosine_distance", "cosine", seed), 0.61, settings))
        rows.append(fake_row(common.Run("rafdb", "softmax", "linear", seed, model="resnet_small"), 0.70 + 0.01 * seed,
                             settings))
        rows.append(fake_row(common.Run("rafdb", "cosine_distance", "cosine", seed, model="resnet_small"), 0.75,
                             settings))
    del rows[0]["run"]["model"]  # run.json files from before the model field must still be read as mini-Xception
    text = ablation.results_markdown(rows)
    table3, stronger = text.split("## Table 3 endpoints on stronger models")
    assert "| softmax | keras | 0, 1, 2 | 61.00 ± 1.00 |" in table3 and "70.00" not in table3, text
    assert "### RAF-DB (validation part), resnet_small" in stronger, text
    assert "| softmax | linear | 0, 1, 2 | 71.00 ± 1.00 |" in stronger, text
    assert "cosine-distance against softmax: accuracy 75.00 ± 0.00 % against 71.00 ± 1.00 %: +4.00 pp, more than twice" in stronger, text
    assert "RAF-DB resnet_small 100 CPU-s" in text, text


def test_balanced_sampling_runs_the_endpoints_on_mini_xception_under_new_names(tmp_path):
    import yaml

    plain = ablation.grid(("rafdb",), (0,), (3,), softmax_heads=("keras",))
    runs = ablation.grid(("rafdb",), (0,), (3,), softmax_heads=("keras",), balanced_sampling=True)
    assert runs[:len(plain)] == plain, "the natural-sampling runs (and their names) must not change"
    assert [run.name for run in runs[len(plain):]] == ["rafdb/softmax-keras-balanced/seed0",
                                                      "rafdb/cosine_distance-s10-m0.35-balanced/seed0"]
    base_raw = yaml.safe_load(BASE.read_text())
    assert common.run_config(base_raw, runs[-1], 3, tmp_path).train.balanced_sampling is True
    assert common.run_config(base_raw, plain[-1], 3, tmp_path).train.balanced_sampling is False


def test_results_markdown_puts_balanced_sampling_beside_natural_sampling():
    settings = common.settings(BASE, 30, None)
    rows = []
    for seed in range(3):
        for sampling, (soft, cos) in (("natural", (0.70, 0.68)), ("balanced", (0.66, 0.67))):
            rows.append(fake_row(common.Run("rafdb", "softmax", "keras", seed, sampling=sampling), soft + 0.01 * seed,
                                 settings))
            rows.append(fake_row(common.Run("rafdb", "cosine_distance", "cosine", seed, sampling=sampling), cos,
                                 settings))
    for row in rows:  # run.json files from before the sampling field must still be read as natural sampling
        if row["run"]["sampling"] == "natural":
            del row["run"]["sampling"]
    text = ablation.results_markdown(rows)
    table3, balanced = text.split("## Class-balanced sampling (mini-Xception)")
    assert "| softmax | keras | 0, 1, 2 | 71.00 ± 1.00 |" in table3 and "67.00" not in table3, text
    assert "| softmax | keras | balanced | 0, 1, 2 | 67.00 ± 1.00 |" in balanced, text
    assert "| cosine-distance (AM-Softmax + island) | cosine | natural | 0, 1, 2 | 68.00 ± 0.00 |" in balanced, text
    assert "balanced against natural sampling: accuracy 67.00 ± 1.00 % against 71.00 ± 1.00 %: -4.00 pp" in balanced
    assert "both balanced, cosine-distance against softmax: accuracy +0.00 pp" in balanced, text


def test_time_estimates_come_from_finished_runs_of_the_same_model():
    settings = common.settings(BASE, 15, None)
    rafdb_resnet = fake_row(common.Run("rafdb", "softmax", "linear", 0, model="resnet_small"), 0.7, settings)
    rafdb_resnet["wall_s"] = 300.0
    rafdb_mini = fake_row(common.Run("rafdb", "softmax", "keras", 0), 0.7, settings)
    rafdb_mini["wall_s"] = 100.0
    finished = [rafdb_resnet, rafdb_mini]
    same = common.Run("rafdb", "cosine_distance", "cosine", 1, model="resnet_small")
    assert common.estimate_seconds(same, finished, 15, None) == 300.0
    other_dataset = common.Run("fer2013", "softmax", "linear", 0, model="resnet_small")
    # from the dataset registry: FER2013's Training split, RAF-DB's train less its 10 % validation carve
    assert common.TRAIN_IMAGES == {"rafdb": 11044, "fer2013": 28709}, common.TRAIN_IMAGES
    ratio = common.TRAIN_IMAGES["fer2013"] / common.TRAIN_IMAGES["rafdb"]
    assert common.estimate_seconds(other_dataset, finished, 15, None) == pytest.approx(300.0 * ratio)
    unseen = common.Run("rafdb", "softmax", "linear", 0, model="resnet_medium")
    assert common.estimate_seconds(unseen, finished, 15, None, images_per_s=100.0) == pytest.approx(
        common.TRAIN_IMAGES["rafdb"] * 15 / 100.0 + common.EVAL_OVERHEAD_S)


def test_reading_compares_macro_f1_and_the_margin_trend():
    settings = common.settings(BASE, 30, None)
    rows = []
    for seed in range(3):
        rows.append(fake_row(common.Run("rafdb", "softmax", "keras", seed), 0.70, settings))
        for margin, accuracy in ((0.0, 0.72), (0.35, 0.70), (0.5, 0.66)):
            rows.append(fake_row(common.Run("rafdb", "cosine_distance", "cosine", seed, 10.0, margin),
                                 accuracy + 0.01 * seed, settings))
    reading = ablation.results_markdown(rows).split("## Reading")[1]
    assert "macro-F1 61.00 ± 1.00 % against 60.00 ± 0.00 %: +1.00 pp, within the seed standard deviation" in reading
    assert "from m = 0 to m = 0.5 accuracy goes from 73.00 ± 1.00 to 67.00 ± 1.00 %" in reading, reading
    assert "macro-F1 from 63.00 ± 1.00 to 57.00 ± 1.00 %" in reading, reading


def test_collect_adds_per_class_recall_and_the_markdown_tabulates_it(tmp_path):
    settings = common.settings(BASE, 30, None)
    for seed, fear in ((0, 0.2), (1, 0.4)):
        run = common.Run("rafdb", "softmax", "keras", seed)
        (tmp_path / run.name / "eval").mkdir(parents=True)
        (tmp_path / run.name / "run.json").write_text(json.dumps(fake_row(run, 0.7, settings)))
        report = {"per_class": {"fear": {"recall": fear, "precision": 0.5}, "happy": {"recall": 0.9, "precision": 0.8}}}
        (tmp_path / run.name / "eval" / "report.json").write_text(json.dumps(report))
    rows = common.collect(tmp_path)
    assert [row["recall"] for row in rows] == [{"fear": 0.2, "happy": 0.9}, {"fear": 0.4, "happy": 0.9}]
    text = ablation.results_markdown(rows)
    assert "| loss | head | fear | happy |" in text and "| softmax | keras | 30.0 | 90.0 |" in text, text


def test_copy_records_keeps_what_the_results_need(tmp_path):
    settings = common.settings(BASE, 30, None)
    run = common.Run("fer2013", "softmax", "keras", 0)
    source = tmp_path / "runs" / run.name
    (source / "eval").mkdir(parents=True)
    (source / "run.json").write_text(json.dumps(fake_row(run, 0.6, settings)))
    (source / "eval" / "report.json").write_text(json.dumps({"per_class": {"happy": {"recall": 0.8}}}))
    (source / "last.pt").write_bytes(b"weights stay behind")
    assert common.copy_records(tmp_path / "runs", tmp_path / "records") == 1
    copied = sorted(p.relative_to(tmp_path / "records").as_posix() for p in (tmp_path / "records").rglob("*.json"))
    assert copied == [f"{run.name}/eval/report.json", f"{run.name}/run.json"]
    assert not list((tmp_path / "records").rglob("*.pt"))
    assert common.collect(tmp_path / "records") == common.collect(tmp_path / "runs")


def test_committed_results_are_rebuilt_from_the_committed_run_records():
    records = REPO_ROOT / "docs" / "runs" / "ablation"
    assert len(common.collect(records)) >= 69, "the ablation run records must be committed"
    longer = ablation.longer_schedule(REPO_ROOT / "docs" / "runs" / "recipe" / "curve-45ep")
    assert longer, "the 45-epoch loss comparison (recipe study records) belongs in docs/results.md"
    expected = ablation.results_markdown(common.collect(records), "docs/runs/ablation", longer)
    assert (REPO_ROOT / "docs" / "results.md").read_text() == expected, \
        "docs/results.md is stale: python studies/ablation.py --results-only --root docs/runs/ablation " \
        "--longer-root docs/runs/recipe/curve-45ep"
