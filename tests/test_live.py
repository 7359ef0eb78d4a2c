"""run_live on the shared clip standing in for a camera: JSONL contract, tracks, annotated video, errors.

A stand-in classifier keeps these tests independent of trained weights; the detector is the real YuNet one.
The clip (../shared/media, or $FER_SHARED/media) has 275 frames at 29.97 fps, 640x360, a face in nearly every frame.
"""

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer.face.detect import FaceDetector
from fer.live import (MAX_CONSECUTIVE_FAILURES, CameraReader, VideoFileReader, display_available, parse_source, run_live,
                      speed_hint)
from fer.tracking import iou_matrix

from conftest import SHARED

CLIP = SHARED / "media" / "short_hamilton_clip.mp4"
CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 275, 29.97, (640, 360)


class StandInClassifier:
    """Classifier interface (class_names, input_size, predict) with probabilities from the crop's brightness."""

    class_names = ("dark", "bright", "flat")
    input_size = 48

    def __init__(self):
        self.batch_sizes = []

    def predict(self, faces: np.ndarray) -> np.ndarray:
        assert faces.dtype == np.uint8 and faces.shape[1:] == (48, 48), f"got {faces.dtype} {faces.shape}"
        self.batch_sizes.append(len(faces))
        mean = faces.reshape(len(faces), -1).mean(axis=1) / 255.0  # (N,)
        logits = 4.0 * np.stack([1.0 - mean, mean, np.full_like(mean, 0.5)], axis=1)  # (N, 3)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def detector(shared):
    assert CLIP.is_file(), f"test clip not found: {CLIP} (set FER_SHARED)"
    return FaceDetector("yunet", max_side=480)


@pytest.fixture(scope="module")
def full_run(detector, tmp_path_factory):
    """One run over the whole clip with every output; the tests below read its results."""
    folder = tmp_path_factory.mktemp("live")
    classifier = StandInClassifier()
    summary = run_live(str(CLIP), classifier, detector, display=False, output=folder / "annotated.mp4",
                       jsonl=folder / "frames.jsonl")
    rows = [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]
    return summary, rows, folder / "annotated.mp4", classifier


def read_video(path: Path) -> tuple[int, tuple[int, int], float]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, size, fps


def test_every_frame_in_jsonl_with_video_time(full_run):
    summary, rows, _, _ = full_run
    assert [r["frame"] for r in rows] == list(range(CLIP_FRAMES)), "one JSONL line per frame, 0-based, in order"
    times = np.array([r["time"] for r in rows])
    np.testing.assert_allclose(times, np.arange(CLIP_FRAMES) / CLIP_FPS, atol=2e-3, err_msg="time = video timestamp")
    assert summary["frames"] == CLIP_FRAMES and summary["frames_failed"] == 0, summary
    assert summary["stopped"] == "end", summary
    assert set(summary["stage_ms"]) == {"decode", "detect", "align", "classify", "draw", "write", "display"}, summary
    assert summary["mean_fps"] > 0 and summary["faces"] == sum(len(r["faces"]) for r in rows), summary


def test_jsonl_face_contract(full_run):
    _, rows, _, classifier = full_run
    faces = [face for row in rows for face in row["faces"]]
    assert faces, "no faces at all"
    for face in faces:
        assert set(face) == {"box", "track_id", "label", "probabilities"}, face
        assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"]), face
        assert isinstance(face["track_id"], int), face
        probs = face["probabilities"]
        assert list(probs) == list(classifier.class_names), face
        assert abs(sum(probs.values()) - 1.0) < 1e-3, face
        assert face["label"] == max(probs, key=probs.get), face


def test_face_in_most_frames_and_one_batch_per_frame(full_run):
    _, rows, _, classifier = full_run
    with_face = sum(bool(r["faces"]) for r in rows)
    assert with_face >= 0.9 * CLIP_FRAMES, f"a face in only {with_face} of {CLIP_FRAMES} frames"
    assert classifier.batch_sizes == [len(r["faces"]) for r in rows if r["faces"]], "faces of a frame: one batch"


def test_track_ids_stable(full_run):
    _, rows, _, _ = full_run
    # A face that overlaps a face of the previous frame well (IoU >= 0.5) is the same face: it must keep its id.
    same, switches = 0, 0
    for previous, current in zip(rows, rows[1:]):
        if not previous["faces"] or not current["faces"]:
            continue
        iou = iou_matrix([f["box"] for f in current["faces"]], [f["box"] for f in previous["faces"]])
        for i, face in enumerate(current["faces"]):
            j = int(np.argmax(iou[i]))
            if iou[i, j] >= 0.5:
                same += 1
                switches += face["track_id"] != previous["faces"][j]["track_id"]
    assert same > 300, f"only {same} face pairs overlap between consecutive frames"
    assert switches <= 0.01 * same, f"{switches} id switches in {same} consecutive face pairs"
    ids = [f["track_id"] for r in rows for f in r["faces"]]
    dominant = max(set(ids), key=ids.count)
    frames_with_face = sum(bool(r["faces"]) for r in rows)
    share = sum(dominant in {f["track_id"] for f in r["faces"]} for r in rows) / frames_with_face
    # The clip has scene cuts (a new shot cannot keep an id), but one face runs through most of it.
    assert share >= 0.8, f"dominant track {dominant} in only {share:.0%} of face frames"


def test_annotated_video_matches_source(full_run):
    _, _, video, _ = full_run
    count, size, fps = read_video(video)
    assert (count, size) == (CLIP_FRAMES, CLIP_SIZE), f"annotated video: {count} frames of {size}"
    assert abs(fps - CLIP_FPS) < 0.01, fps


def test_max_frames_and_detect_every(detector, tmp_path):
    summary = run_live(str(CLIP), StandInClassifier(), detector, display=False, max_frames=30, detect_every=3,
                       jsonl=tmp_path / "f.jsonl", output=tmp_path / "a.mp4", smoothing="mean:4")
    rows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(30)), [r["frame"] for r in rows]
    assert summary["frames"] == 30 and summary["stopped"] == "max_frames", summary
    assert read_video(tmp_path / "a.mp4")[0] == 30
    # Between detections the tracked faces are still reported, with their ids.
    for i in range(1, 30):
        if i % 3 and rows[i - 1]["faces"]:
            prev_ids = {f["track_id"] for f in rows[i - 1]["faces"]}
            assert {f["track_id"] for f in rows[i]["faces"]} == prev_ids, f"frame {i}: {rows[i]} after {rows[i - 1]}"


def test_classify_every_2_classifies_about_half_the_faces_and_holds_the_rest(detector, tmp_path):
    classifier = StandInClassifier()
    summary = run_live(str(CLIP), classifier, detector, display=False, max_frames=60, detect_every=2,
                       classify_every=2, jsonl=tmp_path / "f.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    classified = sum(classifier.batch_sizes)
    assert 0.4 * summary["faces"] <= classified <= 0.7 * summary["faces"], (classified, summary["faces"])
    held = 0
    for previous, current in zip(rows, rows[1:]):
        before = {f["track_id"]: f["probabilities"] for f in previous["faces"]}
        for face in current["faces"]:  # a known track is due on frames where frame + track_id is even
            if face["track_id"] in before and (current["frame"] + face["track_id"]) % 2:
                held += 1
                assert face["probabilities"] == before[face["track_id"]], (current["frame"], face)
    assert held >= 20, f"only {held} held faces in 60 frames"


def test_face_stream_gives_what_live_writes(detector, tmp_path):
    from fer.stream import FaceStream

    run_live(str(CLIP), StandInClassifier(), detector, display=False, max_frames=30, detect_every=2, classify_every=2,
             jsonl=tmp_path / "f.jsonl")
    rows = [json.loads(line)["faces"] for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    stream = FaceStream(StandInClassifier(), detect_every=2, classify_every=2)
    capture, streamed = cv2.VideoCapture(str(CLIP)), []
    for _ in range(30):
        ok, frame = capture.read()
        streamed.append(stream.step(frame, detector))
    capture.release()
    assert streamed == rows


def test_speed_hint_only_when_classifying_made_the_run_fall_behind():
    stage_ms = {"decode": 0.7, "detect": 12.0, "align": 1.8, "classify": 40.0, "draw": 0.2, "write": 0.1, "display": 0}
    slow = {"frames": 275, "mean_fps": 17.0, "source_fps": 29.97, "stage_ms": stage_ms}
    hint = speed_hint(slow, classify_every=1, input_size=112)
    assert "17.0 frames/s" in hint and "40 ms" in hint and "--classify-every 2" in hint and "ferplus" in hint, hint
    small = speed_hint(slow, classify_every=2, input_size=48)
    assert "--classify-every 3" in small and "ferplus" not in small, "a 48 px model is the light one already"
    assert speed_hint({**slow, "mean_fps": 29.0}, 1, 112) is None, "keeping up with the source"
    assert speed_hint({**slow, "frames": 10}, 1, 112) is None, "too short a run to tell"
    assert speed_hint({**slow, "stage_ms": {**stage_ms, "detect": 60.0}}, 1, 112) is None, "detection is the bottleneck"


def test_max_frames_zero_reads_nothing_and_threads_are_restored(detector):
    before = (torch.get_num_threads(), cv2.getNumThreads())
    summary = run_live(str(CLIP), StandInClassifier(), detector, display=False, max_frames=0, num_threads=1)
    assert summary["frames"] == 0 and summary["stopped"] == "max_frames", summary
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before, "thread settings restored after the run"


@pytest.mark.parametrize("camera", [99, "99"])
def test_camera_that_does_not_open(detector, camera):
    with pytest.raises(ValueError, match="camera 99"):
        run_live(camera, StandInClassifier(), detector, display=False, max_frames=1)


def test_missing_and_unreadable_files(detector, tmp_path):
    missing = tmp_path / "no_such_clip.mp4"
    with pytest.raises(FileNotFoundError, match="no_such_clip.mp4"):
        run_live(str(missing), StandInClassifier(), detector, display=False)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        run_live(str(not_video), StandInClassifier(), detector, display=False)


@pytest.mark.parametrize("kwargs, field", [({"detect_every": 0}, "detect_every"), ({"classify_every": 0}, "classify_every"),
                                           ({"max_frames": -1}, "max_frames"),
                                           ({"smoothing": "median:3"}, "smoothing"), ({"motion": "kalman"}, "motion"),
                                           ({"num_threads": 0}, "num_threads")])
def test_bad_arguments_name_the_field(detector, kwargs, field):
    with pytest.raises(ValueError, match=field):
        run_live(str(CLIP), StandInClassifier(), detector, display=False, **kwargs)


class FakeCapture:
    """cv2.VideoCapture stand-in: reads fail at the given indices; the stream stops after `frames` reads."""

    def __init__(self, frames: int, failing: set[int]):
        self.frames, self.failing, self.position = frames, failing, 0

    def read(self):
        index, self.position = self.position, self.position + 1
        if index >= self.frames or index in self.failing:
            return False, None
        return True, np.zeros((4, 4, 3), np.uint8)

    def get(self, prop):
        return 100.0 * (self.position - 1) if prop == cv2.CAP_PROP_POS_MSEC else 0.0

    def release(self):
        pass


def read_all(reader) -> list:
    items = []
    while (item := reader.read()) is not None:
        items.append(item)
    return items


def test_decode_failure_before_frame_count_is_skipped_not_fatal():
    reader = VideoFileReader(str(CLIP))
    reader.capture.release()
    reader.capture, reader.frame_count, reader.fps = FakeCapture(10, {3, 4}), 10, 10.0
    items = read_all(reader)
    assert [i for i, image, _ in items] == list(range(10)), "indices keep the source numbering"
    assert [i for i, image, _ in items if image is None] == [3, 4]
    assert reader.failed == 2


def test_failed_read_at_frame_count_or_long_failure_run_is_the_end():
    reader = VideoFileReader(str(CLIP))
    reader.capture.release()
    reader.capture, reader.frame_count, reader.fps = FakeCapture(5, set()), 5, 10.0
    assert len(read_all(reader)) == 5 and reader.failed == 0, "a failed read at the frame count is the end"
    # A truncated file (the count says 1000, the file stops at 6): a run of failures ends it.
    reader.capture, reader.frame_count, reader.index = FakeCapture(6, set()), 1000, 0
    items = read_all(reader)
    assert len(items) == 6 + MAX_CONSECUTIVE_FAILURES - 1, len(items)
    assert reader.failed == MAX_CONSECUTIVE_FAILURES, reader.failed


def test_camera_reader_keeps_only_the_newest_frame():
    # A stream read through CameraReader with a slow consumer: stale frames are dropped, never queued.
    reader = CameraReader(str(CLIP))
    try:
        items = []
        while (item := reader.read()) is not None:
            items.append(item)
            time.sleep(0.02)  # a loop slower than decoding
    finally:
        reader.close()
    assert [i for i, _, _ in items] == list(range(len(items))), "indices of processed frames"
    assert reader.dropped > 0 and len(items) + reader.dropped == CLIP_FRAMES, (len(items), reader.dropped)
    times = [t for _, _, t in items]
    assert times == sorted(times), "wall-clock times increase"


def test_parse_source_and_display_auto(monkeypatch):
    assert parse_source(0) == 0 and parse_source("2") == 2 and parse_source("rtsp://cam/1") == "rtsp://cam/1"
    assert parse_source(Path("a.mp4")) == "a.mp4"
    with pytest.raises(ValueError, match="source"):
        parse_source(1.5)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert display_available() is False


class InterruptingClassifier(StandInClassifier):
    def predict(self, faces):
        if len(self.batch_sizes) == 5:
            raise KeyboardInterrupt
        return super().predict(faces)


def test_ctrl_c_ends_cleanly_with_a_summary(detector, tmp_path):
    summary = run_live(str(CLIP), InterruptingClassifier(), detector, display=False, output=tmp_path / "a.mp4",
                       jsonl=tmp_path / "f.jsonl")
    lines = (tmp_path / "f.jsonl").read_text().splitlines()
    assert summary["stopped"] == "interrupted" and summary["frames"] == len(lines) == 5, summary
    assert read_video(tmp_path / "a.mp4")[0] == 5, "the video is closed properly and playable"


def test_with_the_shipped_classifier(detector, tmp_path):
    from fer.inference import Classifier

    classifier = Classifier.load(None)
    summary = run_live(str(CLIP), classifier, detector, display=False, max_frames=20, detect_every=2,
                       jsonl=tmp_path / "f.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert summary["frames"] == 20 and len(rows) == 20, summary
    faces = [f for r in rows for f in r["faces"]]
    assert faces and all(list(f["probabilities"]) == list(classifier.class_names) for f in faces)
    assert all(f["label"] in classifier.class_names for f in faces)
