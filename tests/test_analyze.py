"""Video reports on the shared clip: the CSV is live's per-frame output, the summary agrees with it, real PNGs."""

import csv
import json
import re

import cv2
import numpy as np
import pytest

from fer.backends import load_classifier
from fer.cli import main
from fer.face import FaceDetector
from fer.live import run_live
from fer.video_report import Timeline, analyze_video

FRAMES = 90  # 3 s of the clip


@pytest.fixture(scope="module")
def clip(shared):
    return shared / "media" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="module")
def report(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    classifier, detector = load_classifier(None), FaceDetector(max_side=480)
    summary = analyze_video(clip, out, classifier, detector, max_frames=FRAMES, progress=False)
    jsonl = out.parent / "live.jsonl"
    run_live(str(clip), classifier, FaceDetector(max_side=480), display=False, jsonl=jsonl, max_frames=FRAMES,
             detect_every=2)  # `live`'s command-line default, as analyze's
    return out, summary, [json.loads(line) for line in jsonl.read_text().splitlines()], classifier.class_names


def test_csv_rows_are_lives_tracked_smoothed_faces(report):
    out, summary, live_rows, class_names = report
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["frame", "time_s", "track_id", "x", "y", "w", "h", "label"] + [
        f"p_{name}" for name in class_names]
    live_faces = [(row["frame"], face) for row in live_rows for face in row["faces"]]
    assert len(rows) == len(live_faces) == summary["face_frames"] > FRAMES, (len(rows), len(live_faces))
    for row, (frame, face) in zip(rows, live_faces):
        assert int(row["frame"]) == frame and int(row["track_id"]) == face["track_id"], (row, face)
        assert [int(row[k]) for k in "xywh"] == face["box"] and row["label"] == face["label"]
        for name in class_names:
            assert abs(float(row[f"p_{name}"]) - face["probabilities"][name]) < 2e-5


def test_summary_agrees_with_the_csv(report):
    out, summary, _, class_names = report
    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary["frames"] == FRAMES and abs(summary["duration_s"] - FRAMES / summary["fps"]) < 1e-3
    assert json.loads((out / "summary.json").read_text()) == summary
    for track in summary["tracks"]:
        mine = [r for r in rows if int(r["track_id"]) == track["track_id"]]
        assert track["frames"] == len(mine)
        assert track["start_s"] == pytest.approx(float(mine[0]["time_s"]), abs=1e-3)
        labels = [r["label"] for r in mine]
        for name in class_names:
            assert track["share"][name] == pytest.approx(labels.count(name) / len(labels), abs=1e-4)
        assert track["dominant"] == max(class_names, key=labels.count)
    markdown = (out / "summary.md").read_text()
    assert len(re.findall(r"^\| \d+ \|", markdown, re.M)) == len(summary["tracks"]), "one table row per track"
    assert summary["dominant"] in class_names


def test_timelines_are_readable_pngs(report):
    out, summary, _, _ = report
    long_tracks = [t for t in summary["tracks"] if t["duration_s"] >= 0.5]
    assert long_tracks and summary["timelines"] == [f"timeline_track{t['track_id']}.png" for t in long_tracks]
    for name in summary["timelines"]:
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] >= 300 and image.shape[1] >= 900, (name, image.shape)
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, f"{name} is blank"


def test_timeline_memory_stays_bounded_over_long_videos():
    rng = np.random.default_rng(0)
    timeline = Timeline(frame_s=1 / 30, num_classes=7, max_points=100)
    probs = rng.dirichlet(np.ones(7), size=100_000)  # an hour at 30 fps is 108,000 frames
    for index, row in enumerate(probs):
        timeline.add(index, row)
    assert len(timeline.bins) <= 100, len(timeline.bins)
    times, means = timeline.series()
    assert means.shape == (len(times), 7) and np.all(np.diff(times) > 0)
    counts = np.array([timeline.bins[i][1] for i in sorted(timeline.bins)])
    assert counts.sum() == len(probs)
    np.testing.assert_allclose((means * counts[:, None]).sum(0) / counts.sum(), probs.mean(0), atol=1e-9)


def test_cli_analyze(clip, tmp_path, capsys):
    assert main(["analyze", str(clip), "--out", str(tmp_path), "--max-frames", "20", "--no-progress"]) == 0
    assert "20 frames" in capsys.readouterr().out
    assert {"frames.csv", "summary.json", "summary.md"} <= {p.name for p in tmp_path.iterdir()}
    assert main(["analyze", str(tmp_path / "missing.mp4"), "--out", str(tmp_path)]) == 2
