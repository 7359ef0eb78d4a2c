"""run.py as a user runs it: help for every subcommand, predict's JSON contract and exit code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("train", "evaluate", "predict", "preprocess", "live")


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
                 "--max-frames", "20", "--jsonl", str(jsonl))
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [f["frame"] for f in frames] == list(range(20))
    assert sum(1 for f in frames if f["faces"]) >= 18


def test_live_missing_file_is_a_clear_error(tmp_path):
    result = run("live", "--source", str(tmp_path / "missing.mp4"), "--no-display")
    assert result.returncode != 0 and "missing.mp4" in result.stderr
