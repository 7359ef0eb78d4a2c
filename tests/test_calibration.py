"""Calibrated probabilities (fer/calibration.py): the temperature fit and ECE on synthetic logits with known answers,
the shipped models' fits on their selection splits, the checkpoint round trip, backend parity and T = 1 unchanged."""

import json

import numpy as np
import onnx
import pytest
import torch

from fer.backends import load_classifier
from fer.calibration import (DEFAULT_OBJECTIVE, ECE_BINS, OBJECTIVES, expected_calibration_error, fit_temperature,
                             nll, read_selection_faces, reliability, selection_logits, softmax, temperature_of,
                             top_label_nll)
from fer.checkpoint import atomic_save, load_checkpoint, shipped_models
from fer.cli import main
from fer.data import registry
from fer.data.transforms import to_tensor
from fer.export import onnx_bytes
from fer.inference import Classifier

from conftest import model_faces

PARITY = 1e-4  # tests/test_export.py's bound on max |p_onnx - p_torch|


def synthetic(n: int, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, k))
    p = softmax(logits)
    labels = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)  # one draw per row from p
    return logits, labels


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_fit_recovers_a_known_temperature(objective):
    logits, labels = synthetic(40_000)
    loss = {"nll": nll, "top_label": top_label_nll}[objective]
    for true_t in (0.5, 2.5, 6.0):
        fitted = fit_temperature(logits * true_t, labels, objective)  # logits scaled by T: over-confident for T > 1
        assert fitted == pytest.approx(true_t, rel=0.03), (true_t, fitted)
        assert loss(logits * true_t, labels, fitted) < loss(logits * true_t, labels)


def test_top_label_log_loss_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]))  # top label 0 twice: right, then wrong
    labels = np.array([0, 1])
    assert top_label_nll(logits, labels) == pytest.approx(-(np.log(0.7) + np.log(1 - 0.6)) / 2)
    # T = 2: p = softmax(log p / 2) = sqrt(p) normalised
    top = [np.sqrt(0.7) / np.sqrt([0.7, 0.2, 0.1]).sum(), np.sqrt(0.6) / np.sqrt([0.6, 0.3, 0.1]).sum()]
    assert top_label_nll(logits, labels, 2.0) == pytest.approx(-(np.log(top[0]) + np.log(1 - top[1])) / 2)


def test_unknown_objective_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="calibration objective must be one of top_label, nll, got 'ece'"):
        fit_temperature(np.zeros((2, 3)), np.array([0, 1]), "ece")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["calibrate", "fer2013", "--objective", "ece", "--out", str(tmp_path / "x.pt")])
    from fer.cli import build_parser  # the CLI spells the objectives out (no torch import to build it): same list

    args = build_parser().parse_args(["calibrate", "fer2013", "--out", "x.pt"])
    assert args.objective == DEFAULT_OBJECTIVE
    for objective in OBJECTIVES:
        assert build_parser().parse_args(["calibrate", "x", "--objective", objective, "--out", "x.pt"]).objective == objective


def test_ece_is_near_zero_when_calibrated_and_large_when_over_confident():
    logits, labels = synthetic(100_000, seed=1)
    calibrated = expected_calibration_error(softmax(logits), labels)
    over = expected_calibration_error(softmax(logits * 4), labels)
    assert calibrated < 0.01, calibrated
    assert over > 0.15, over


def test_ece_by_hand_and_bin_edges():
    # confidences 1/15 (bin 0 by its closed upper edge), 0.5 twice (bin 7), 1.0 (bin 14)
    probs = np.array([[1 / 15] * 15, [0.5, 0.5] + [0] * 13, [0.5, 0.5] + [0] * 13, [1.0] + [0] * 14])
    labels = np.array([0, 0, 1, 0])
    rows = reliability(probs, labels)
    assert len(rows) == ECE_BINS and [r["n"] for r in rows if r["n"]] == [1, 2, 1]
    assert rows[0]["n"] == 1 and rows[7]["n"] == 2 and rows[14]["n"] == 1
    # bin 0: conf 1/15, acc 1; bin 7: conf 0.5, acc 0.5 (argmax 0: one right); bin 14: conf 1, acc 1
    expected = 1 / 4 * abs(1 - 1 / 15)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="fit_temperature: labels must be integers in \\[0, 3\\)"):
        fit_temperature(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="nll: non-finite"):
        nll(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="x.pt: calibration.temperature must be a positive finite number, got -1"):
        temperature_of({"path": "x.pt", "calibration": {"temperature": -1}})
    assert temperature_of({"path": "x.pt"}) == 1.0


@pytest.mark.parametrize("name", shipped_models())
def test_shipped_models_are_calibrated_on_their_selection_split(name):
    calibration = load_checkpoint(name).get("calibration")
    assert calibration, f"{name}: no calibration key; run `python run.py calibrate {name} --out fer/weights/{name}.pt`"
    for part in calibration["fitted_on"].split(" + "):
        dataset, split = part.split(" ")[0].split("/")
        assert split == registry.get(dataset).selection_split, f"{name}: fitted on {part}, not a selection split"
    assert calibration["objective"] == DEFAULT_OBJECTIVE
    assert calibration["ece_after"] < calibration["ece_before"] and calibration["nll_after"] < calibration["nll_before"]
    assert Classifier.load(name).temperature == calibration["temperature"] > 1  # the cosine head is over-confident


def test_calibrated_probabilities_fit_a_selection_split_better(data_root):
    """The shipped fer2013 on 1,000 PublicTest faces: lower NLL and ECE with its temperature than without."""
    classifier = Classifier.load("fer2013")
    faces, text, _ = read_selection_faces(classifier, "fer2013", "public", data_root)
    pick = np.random.default_rng(0).choice(len(faces), 1000, replace=False)
    logits, labels = selection_logits(classifier, faces.images[pick]), faces.labels[pick]
    calibrated = classifier.predict(faces.images[pick])
    assert np.allclose(calibrated, softmax(logits, classifier.temperature), atol=1e-5)
    assert nll(logits, labels, classifier.temperature) < nll(logits, labels) - 0.1
    assert expected_calibration_error(calibrated, labels) < expected_calibration_error(softmax(logits), labels) - 0.05


def test_test_splits_are_refused(data_root):
    classifier = Classifier.load("rafdb")
    with pytest.raises(ValueError, match="rafdb: calibrate on the selection split 'val', not 'test'"):
        read_selection_faces(classifier, "rafdb", "test", data_root)
    assert main(["calibrate", "fer2013", "--dataset", "fer2013", "--split", "private", "--out", "x.pt"]) == 2


def test_checkpoint_round_trip_keeps_the_temperature_and_the_weights(small_root, tmp_path):
    out = tmp_path / "rafdb_calibrated.pt"
    assert main(["calibrate", "rafdb", "--data-root", str(small_root), "--out", str(out)]) == 0
    original, written = load_checkpoint("rafdb"), load_checkpoint(out)
    record = written["calibration"]
    assert record["fitted_on"] == "rafdb/val" and record["n"] == 9  # 10 % of small_root's 84 training faces
    assert Classifier.load(out).temperature == record["temperature"]
    for key, tensor in original["state_dict"].items():  # float16 stays float16, bit for bit
        assert written["state_dict"][key].dtype == tensor.dtype and torch.equal(written["state_dict"][key], tensor)
    assert {k: v for k, v in written.items() if k not in ("calibration", "path", "state_dict")} == \
        {k: v for k, v in original.items() if k not in ("calibration", "path", "state_dict")}


def with_temperature(name: str, temperature: float | None, path) -> str:
    """A copy of a shipped checkpoint with the given temperature (None: without the key)."""
    checkpoint = load_checkpoint(name)
    del checkpoint["path"]
    checkpoint.pop("calibration", None)
    if temperature is not None:
        checkpoint["calibration"] = {"temperature": temperature, "fitted_on": "test"}
    atomic_save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("name", ["default", "fer2013"])
def test_backends_give_the_same_calibrated_probabilities(name, real_faces, tmp_path):
    path = with_temperature(name, 3.0, tmp_path / "t3.pt")
    torch_classifier = Classifier.load(path)
    faces = model_faces(real_faces, torch_classifier)
    logits = selection_logits(torch_classifier, faces)
    probs = torch_classifier.predict(faces)
    assert np.allclose(probs, softmax(logits, 3.0), atol=1e-5)
    assert np.abs(probs - softmax(logits)).max() > 0.05, "a temperature of 3 must change the probabilities"
    for backend in ("onnxruntime", "opencv"):
        gap = np.abs(load_classifier(path, backend).predict(faces) - probs).max()
        assert gap <= PARITY, f"{name} {backend}: max |p - p_torch| = {gap:.2e}"


def test_onnx_divides_by_the_temperature_in_the_graph_and_keeps_it_in_the_metadata(tmp_path):
    calibrated, plain = (load_checkpoint(with_temperature("rafdb", t, tmp_path / f"{t}.pt")) for t in (2.0, None))
    graphs = {}
    for key, ckpt in (("calibrated", calibrated), ("plain", plain)):
        from fer.checkpoint import load_model

        model, _ = load_model(ckpt["path"])
        data = onnx_bytes(model, ckpt["model_spec"], ckpt["class_names"], ckpt.get("config"), ckpt.get("calibration"))
        graphs[key] = onnx.load_from_string(data)
    ops = {key: [node.op_type for node in g.graph.node] for key, g in graphs.items()}
    assert ops["calibrated"].count("Div") == ops["plain"].count("Div") + 1
    metadata = {p.key: p.value for p in graphs["calibrated"].metadata_props}
    assert json.loads(metadata["fer.calibration"])["temperature"] == 2.0


def test_a_checkpoint_without_the_key_gives_exactly_the_uncalibrated_probabilities(real_faces, tmp_path):
    classifier = Classifier.load(with_temperature("default", None, tmp_path / "plain.pt"))
    assert classifier.temperature == 1.0 and classifier.checkpoint["calibration"] == {}
    faces = model_faces(real_faces, classifier)
    x = to_tensor(faces)
    with torch.inference_mode():  # Classifier.outputs before calibration existed: softmax of the logits, nothing more
        expected = torch.softmax(classifier.logits(x)[1], dim=1)
    assert torch.equal(classifier.outputs(x)[1], expected)
    onnx_probs = load_classifier(classifier.source, "onnxruntime").predict(faces)
    assert np.abs(onnx_probs - expected.numpy()).max() <= PARITY


def test_shipping_a_calibrated_checkpoint_by_name_keeps_its_temperature(tmp_path):
    from fer.checkpoint import export_checkpoint

    source = with_temperature("rafdb", 1.5, tmp_path / "run_best.pt")
    shipped = export_checkpoint(source, "mine", weights_dir=tmp_path / "weights")
    assert Classifier.load(shipped).temperature == 1.5


def test_evaluate_reports_the_calibrated_ece_of_the_split(data_root, tmp_path):
    """evaluate on ferplus's own selection split reports the ECE `calibrate` stored for it: the same faces, the same
    calibrated probabilities."""
    from fer.config import DataConfig
    from fer.evaluate import evaluate

    stored = load_checkpoint("ferplus")["calibration"]
    assert stored["fitted_on"] == "ferplus/public"
    report = evaluate("ferplus", DataConfig(dataset="ferplus"), "public", tmp_path, data_root=data_root, device="cpu")
    assert report["n_samples"] == stored["n"]
    assert report["calibration"]["temperature"] == stored["temperature"]
    assert report["calibration"]["ece"] == pytest.approx(stored["ece_after"], abs=1e-4)
    assert "ECE, top label, 15 bins" in (tmp_path / "report.md").read_text()


def test_the_objective_study_page_is_rebuilt_from_its_records():
    from studies import calibration as study
    from studies.matrix import PAGE, section

    records = study.collect()
    assert {r["model"] for r in records} == set(shipped_models()), "python studies/calibration.py --models ..."
    assert section(PAGE.read_text(), study.START, study.END) == study.markdown(records), \
        "docs/models-and-matrix.md calibration-objective section is stale: python studies/calibration.py --table-only"


def test_held_out_ece_is_small_for_calibrated_logits_and_large_for_a_wrong_temperature():
    """The study's held-out check on logits calibrated by construction: either objective's T, fitted on one half,
    leaves the other half's ECE near the sampling floor; T forced to 1/3 of the truth does not."""
    from studies.calibration import compare, held_out_ece

    logits, labels = synthetic(6000, seed=3)
    for objective in OBJECTIVES:
        values = held_out_ece(logits * 3.0, labels, objective, repeats=2)
        assert len(values) == 4 and max(values) < 0.03, (objective, values)
    assert expected_calibration_error(softmax(logits * 3.0), labels) > 0.15
    results, paired = compare(logits * 3.0, labels, repeats=2)  # both objectives recover T = 3: no real difference
    assert paired["n"] == 4 and abs(paired["mean"]) < 0.01, paired
    assert all(r["temperature"] == pytest.approx(3.0, rel=0.05) for r in results.values()), results
