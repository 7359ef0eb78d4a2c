"""run.py as a user runs it: help for every subcommand, predict's JSON contract and exit code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("train", "evaluate", "predict", "preprocess", "live", "fetch-backbone", "calibrate")


def run(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_every_subcommand():
    result = run("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name):
    result = run(name, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_predict_json_contract_and_unreadable_file(tmp_path, shared):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    photos = [shared / "media" / "two_people.jpg", shared / "media" / "coffee_noface.png", broken]
    out = tmp_path / "out.json"
    result = run("predict", *map(str, photos), "--json", str(out), "--annotate", str(tmp_path / "annotated"))
    assert result.returncode == 1, "an unreadable file makes the exit code non-zero, after the others ran"
    results = json.loads(out.read_text())
    assert [r["path"] for r in results] == list(map(str, photos))
    two, none, bad = results
    assert len(two["faces"]) == 2 and two["error"] is None
    face = two["faces"][0]
    assert set(face) >= {"box", "landmarks", "score", "label", "probabilities"}
    assert len(face["box"]) == 4 and face["label"] in face["probabilities"]
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
    assert none["faces"] == [] and none["error"] is None
    assert bad["faces"] == [] and "broken.jpg" in result.stderr + result.stdout and bad["error"]
    assert (tmp_path / "annotated" / "two_people.jpg").stat().st_size > 0


def test_live_on_the_video_file(tmp_path, shared):
    jsonl = tmp_path / "frames.jsonl"
    result = run("live", "--source", str(shared / "media" / "short_hamilton_clip.mp4"), "--no-display",
                 "--max-frames", "20", "--jsonl", str(jsonl), "--threads", "2")
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [f["frame"] for f in frames] == list(range(20))
    assert sum(1 for f in frames if f["faces"]) >= 18


def test_live_missing_file_is_a_clear_error(tmp_path):
    result = run("live", "--source", str(tmp_path / "missing.mp4"), "--no-display")
    assert result.returncode != 0 and "missing.mp4" in result.stderr


def test_live_thread_count_below_one_is_a_clear_error(shared):
    result = run("live", "--source", str(shared / "media" / "short_hamilton_clip.mp4"), "--no-display", "--threads", "0")
    assert result.returncode != 0 and "threads" in result.stderr and "Traceback" not in result.stderr, result.stderr


def media_face_counts(media: Path) -> dict:
    """The face count of every photo, read from the table in shared/media/README.md (YuNet, checked by eye)."""
    counts = {}
    for line in (media / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[1].endswith("photo"):
            counts[cells[0]] = int(cells[3].split()[0])
    return counts


def test_predict_with_no_environment_finds_every_face_of_the_shared_photos(shared):
    counts = media_face_counts(shared / "media")
    assert len(counts) == 14, counts
    env = {k: v for k, v in os.environ.items() if not k.startswith("FER_")}  # no FER_YUNET_MODEL, nothing else
    env["PYTHONPATH"] = str(REPO)
    photos = [str(shared / "media" / name) for name in sorted(counts)]
    result = subprocess.run([sys.executable, str(REPO / "run.py"), "predict", *photos, "--json", "-"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = {Path(r["path"]).name: len(r["faces"]) for r in json.loads(result.stdout)}
    assert found == counts


def test_export_onnx_then_predict_with_each_backend(tmp_path, shared):
    out = tmp_path / "fer2013.onnx"
    assert run("export", "fer2013", "--onnx", str(out)).returncode == 0 and out.stat().st_size > 0
    photo = str(shared / "media" / "expression_angry_man.jpg")
    labels = set()
    for backend, checkpoint in (("torch", "fer2013"), ("onnxruntime", str(out)), ("opencv", str(out))):
        result = run("predict", photo, "--backend", backend, "--checkpoint", checkpoint, "--json", "-")
        assert result.returncode == 0, result.stderr
        labels.add(json.loads(result.stdout)[0]["faces"][0]["label"])
    assert len(labels) == 1, labels


def bad_checkpoints(tmp_path: Path) -> dict:
    """Each kind of bad file the issue lists, built here, with the words its one-line error must contain."""
    import onnx
    import torch

    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not a checkpoint\n")
    shipped = torch.load(REPO / "fer" / "weights" / "default.pt", weights_only=True)
    truncated = tmp_path / "truncated.pt"
    data = (REPO / "fer" / "weights" / "default.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    unknown = tmp_path / "unknown_arch.pt"
    torch.save({**shipped, "model_spec": {**shipped["model_spec"], "name": "vit_huge"}}, unknown)

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo this should never run",))

    malicious = tmp_path / "malicious.pt"
    torch.save({"state_dict": RunsCode()}, malicious)
    run("export", "fer2013", "--onnx", str(tmp_path / "good.onnx"))
    proto = onnx.load(str(tmp_path / "good.onnx"))
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3  # a colour input; metadata says gray
    mismatched = tmp_path / "mismatched.onnx"
    mismatched.write_bytes(proto.SerializeToString())
    return {text: ("not a torch checkpoint", "torch"), truncated: ("truncated", "torch"),
            unknown: ("unknown architecture 'vit_huge'", "torch"), malicious: ("would import and run", "torch"),
            mismatched: ("inputs do not match", "onnxruntime")}


def test_bad_checkpoints_are_one_line_errors(tmp_path, shared):
    photo = str(shared / "media" / "camera.png")
    for path, (words, backend) in bad_checkpoints(tmp_path).items():
        result = run("predict", photo, "--checkpoint", str(path), "--backend", backend)
        message = result.stderr.strip()
        assert result.returncode == 2, (path.name, result.returncode, message)
        assert "Traceback" not in message and "weights_only=False" not in message + result.stdout
        assert message.count("\n") == 0 and message.startswith("error: ") and str(path) in message, message
        assert words in message, message
        assert "should never run" not in result.stdout


def test_live_with_the_onnx_backends(tmp_path, shared):
    for backend in ("onnxruntime", "opencv"):
        jsonl = tmp_path / f"{backend}.jsonl"
        result = run("live", "--source", str(shared / "media" / "short_hamilton_clip.mp4"), "--no-display",
                     "--max-frames", "10", "--jsonl", str(jsonl), "--backend", backend)
        assert result.returncode == 0, result.stderr
        frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert len(frames) == 10 and sum(len(f["faces"]) for f in frames) >= 10


def test_export_needs_a_target():
    result = run("export", "fer2013")
    assert result.returncode == 2 and "--onnx" in result.stderr and "Traceback" not in result.stderr
