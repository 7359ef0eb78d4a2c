"""Live classification: camera, video file or stream -> detect -> track -> align -> classify (one batch) -> smooth.

The only module that opens cameras and windows. `run_live` reads frames, runs the face detector on every
`detect_every`-th frame (tracks carry the faces in between, see fer.tracking), classifies all faces of a frame
in one batch, smooths each track's probabilities (that per-frame step is fer.stream.FaceStream's), and writes any of: a
window, an annotated mp4, a JSONL file.

Sources:
- an int or a digit string: a camera index. A capture thread keeps only the newest frame, so a slow loop drops
  stale frames (counted as frames_dropped) instead of lagging behind; `time` is wall-clock seconds since start.
- a string with "://": a stream URL, read like a camera.
- anything else: a video file, read frame by frame, nothing dropped; `time` is the video timestamp in seconds.

Decode failures in files: when read() fails while fewer frames than CAP_PROP_FRAME_COUNT have been seen, the
frame is counted in frames_failed and skipped (it is missing from the JSONL and the annotated video; frame indices
keep the source numbering, so the gap shows). A failure at or after the frame count is the end of the file, and so
is a run of MAX_CONSECUTIVE_FAILURES failures (a truncated file), which is logged as a warning.

The annotated video has one frame per processed frame at the source's fps (a camera that reports none: 30), so a
camera run that dropped frames plays faster than real time.

JSONL: one object per processed frame: {"frame": 0-based index, "time": seconds, "faces": [{"box": [x, y, w, h],
"track_id": int, "label": str, "probabilities": {class name: p}}]}; probabilities and label are the smoothed ones.
"""

import json
import logging
import os
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import torch

from fer.face.draw import draw_faces
from fer.stream import DEFAULT_SMOOTHING, FaceStream, check_int

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "align", "classify", "draw", "write", "display")
MAX_CONSECUTIVE_FAILURES = 25  # failed reads in a row that end a file or camera (about 1 s of video)
CAMERA_READ_TIMEOUT_S = 5.0  # no new camera frame for this long ends the run
DEFAULT_OUTPUT_FPS = 30.0  # for cameras that do not report their frame rate
KEYS_QUIT = (ord("q"), 27)  # q, Esc
KEYS_PAUSE = (ord(" "), ord("p"))
KEY_SNAPSHOT = ord("s")
FPS_EMA_ALPHA = 0.1  # smoothing of the on-screen frame rate


def display_available() -> bool:
    """False on Linux without an X11 or Wayland display (a server, CI, ssh); True elsewhere."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def parse_source(source: int | str) -> int | str:
    """A camera index for an int or a digit string, the string itself otherwise."""
    if isinstance(source, bool) or not isinstance(source, (int, str, os.PathLike)):
        raise ValueError(f"source must be a camera index, a video file path or a stream URL, got {source!r}")
    if isinstance(source, int):
        return source
    source = os.fspath(source)
    return int(source) if source.strip().isdigit() else source


class VideoFileReader:
    """Frames of a video file in order; see the module docstring for how decode failures are told from the end."""

    def __init__(self, path: str):
        if not Path(path).is_file():
            raise FileNotFoundError(f"video file not found: {path}")
        self.name = path
        self.capture = cv2.VideoCapture(path)
        if not self.capture.isOpened():
            raise ValueError(f"cannot open video file {path}: not a video OpenCV can decode")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or DEFAULT_OUTPUT_FPS
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))  # 0 or -1 when unknown
        self.index = 0
        self.failed = 0
        self.dropped = 0  # never: files are read frame by frame
        self._failures_in_row = 0

    def read(self) -> tuple[int, np.ndarray | None, float] | None:
        """(frame index, image_bgr or None for a decode failure, seconds), or None at the end."""
        ok, frame = self.capture.read()
        index = self.index
        self.index += 1
        if ok:
            self._failures_in_row = 0
            msec = self.capture.get(cv2.CAP_PROP_POS_MSEC)  # timestamp of the frame just read
            return index, frame, (msec / 1000.0 if msec > 0 or index == 0 else index / self.fps)
        if index >= self.frame_count:
            return None
        self.failed += 1
        self._failures_in_row += 1
        if self._failures_in_row >= MAX_CONSECUTIVE_FAILURES:
            log.warning("%s: %d failed reads in a row up to frame %d of %d; treating it as the end (truncated file?)",
                        self.name, self._failures_in_row, index, self.frame_count)
            return None
        log.warning("%s: frame %d failed to decode; skipped", self.name, index)
        return index, None, index / self.fps

    def close(self) -> None:
        self.capture.release()


class CameraReader:
    """A camera index or stream URL. A capture thread keeps only the newest frame, so the caller never lags."""

    def __init__(self, source: int | str):
        self.name = f"camera {source}" if isinstance(source, int) else f"stream {source}"
        self.capture = cv2.VideoCapture(source)
        if not self.capture.isOpened():
            self.capture.release()
            raise ValueError(f"cannot open {self.name}: no such device, device busy, or unreachable URL")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or DEFAULT_OUTPUT_FPS
        self.index = 0
        self.failed = 0
        self.dropped = 0
        self._start = time.perf_counter()
        self._latest: tuple[np.ndarray, float] | None = None
        self._ended = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._capture_loop, name="fer-capture", daemon=True)
        self._thread.start()

    def _capture_loop(self) -> None:
        failures_in_row = 0
        while not self._ended:
            ok, frame = self.capture.read()
            with self._condition:
                if ok:
                    failures_in_row = 0
                    if self._latest is not None:
                        self.dropped += 1  # the loop did not take the previous frame in time
                    self._latest = (frame, time.perf_counter() - self._start)
                else:
                    failures_in_row += 1
                    self.failed += 1
                    if failures_in_row >= MAX_CONSECUTIVE_FAILURES:
                        log.warning("%s: %d failed reads in a row; stopping", self.name, failures_in_row)
                        self._ended = True
                self._condition.notify_all()
            if not ok:
                time.sleep(0.01)

    def read(self) -> tuple[int, np.ndarray, float] | None:
        """(frame index, newest image_bgr, seconds since start), or None when the camera stopped."""
        with self._condition:
            got_one = self._condition.wait_for(lambda: self._latest is not None or self._ended, CAMERA_READ_TIMEOUT_S)
            if self._latest is None:
                if not got_one:
                    log.warning("%s: no frame for %.0f s; stopping", self.name, CAMERA_READ_TIMEOUT_S)
                return None
            frame, seconds = self._latest
            self._latest = None
        index = self.index
        self.index += 1
        return index, frame, seconds

    def close(self) -> None:
        with self._condition:
            self._ended = True
        self._thread.join(timeout=2.0)
        self.capture.release()


def open_source(source: int | str) -> VideoFileReader | CameraReader:
    source = parse_source(source)
    if isinstance(source, int) or "://" in source:
        return CameraReader(source)
    return VideoFileReader(source)


def save_snapshot(image_bgr: np.ndarray, folder: Path, frame_index: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"snapshot_{time.strftime('%Y%m%d_%H%M%S')}_{frame_index:06d}.png"
    if not cv2.imwrite(str(path), image_bgr):
        raise ValueError(f"cannot write snapshot {path}")
    log.info("snapshot saved: %s", path)
    return path


def handle_keys(window_name: str, image_bgr: np.ndarray, frame_index: int, snapshot_dir: Path) -> bool:
    """Poll the window's keys once, staying here while paused; True when the user quits (or closed the window)."""
    paused = False
    key = cv2.waitKey(1) & 0xFF
    while True:
        if key in KEYS_QUIT or cv2.getWindowProperty(window_name, cv2.WND_PROP_VISIBLE) < 1:
            return True
        if key in KEYS_PAUSE:
            paused = not paused
        elif key == KEY_SNAPSHOT:
            save_snapshot(image_bgr, snapshot_dir, frame_index)
        if not paused:
            return False
        key = cv2.waitKey(50) & 0xFF


def open_writer(path: Path, fps: float, image_bgr: np.ndarray) -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = image_bgr.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise ValueError(f"cannot write video {path} (mp4v, {width}x{height} at {fps:.2f} fps); use a .mp4 path")
    return writer


def run_live(source: int | str, classifier, detector, *, display: bool | None = None,
             output: str | os.PathLike | None = None, jsonl: str | os.PathLike | None = None,
             max_frames: int | None = None, detect_every: int = 1, classify_every: int = 1,
             smoothing: str = DEFAULT_SMOOTHING,
             motion: str = "hold", max_missed: int = 15, iou_threshold: float = 0.3,
             snapshot_dir: str | os.PathLike = "snapshots", window_name: str = "fer live",
             num_threads: int | None = 1) -> dict:
    """Classify the faces in a camera, video file or stream until it ends, max_frames, or q/Esc in the window.

    Args:
        source: camera index (int or digit string), video file path or stream URL.
        classifier: has class_names, input_size, channels (1 when absent) and predict(uint8 (N, S, S) gray or
            (N, S, S, 3) BGR) -> probs (N, K) (fer.inference.Classifier).
        detector: has detect(image_bgr) -> list[Face] (fer.face.detect.FaceDetector).
        display: show a window (keys: q/Esc quit, space/p pause, s snapshot); None = when a display is available.
        output: annotated mp4 path (mp4v, the source's size and fps, one frame per processed frame).
        jsonl: path for one JSON object per processed frame (see the module docstring).
        max_frames: stop after this many frames read from the source (processed or failed); None = no limit.
        detect_every: run the detector on every k-th frame; tracks move the boxes in between.
        classify_every: classify each tracked face on every k-th frame (staggered over the faces, and always on a
            track's first frame, fer.tracking.classification_due); in between its smoothed probabilities are held.
            On a CPU too slow for the model this trades label latency (smoothing counts classifications, not frames)
            for frame rate (docs/speed.md, Live).
        smoothing: "ema:ALPHA", "mean:N" or "none" (fer.tracking.ProbabilitySmoother.from_spec).
        motion: "hold" or "velocity": how boxes move between detections (fer.tracking.IouTracker).
        max_missed, iou_threshold: tracker settings (fer.tracking.IouTracker).
        snapshot_dir: folder for the s key's snapshots.
        window_name: title of the window.
        num_threads: OpenCV and torch threads during the run (restored afterwards; None: leave them). One thread is
            fastest for one small face model per frame: on busy cores torch's default thread count makes a 1-face
            classify many times slower (docs/speed.md, Live).

    Returns a summary: frames (processed), frames_failed, frames_dropped (cameras), faces (face boxes over all
    frames), tracks (distinct track ids), seconds, mean_fps, stage_ms (mean ms per processed frame of each stage
    in STAGES), source_fps (the source's frame rate, 30 for a camera that reports none), stopped ("end",
    "max_frames", "quit" or "interrupted" by Ctrl+C).
    """
    check_int("max_frames", max_frames, 0, optional=True)
    check_int("num_threads", num_threads, 1, optional=True)
    stream = FaceStream(classifier, detect_every=detect_every, classify_every=classify_every, smoothing=smoothing,
                        motion=motion, max_missed=max_missed, iou_threshold=iou_threshold)
    display = display_available() if display is None else bool(display)

    stage_s = dict.fromkeys(STAGES, 0.0)
    frames = faces_total = 0
    track_ids = set()
    fps = 0.0
    stopped = "end"
    with ExitStack() as stack:
        if num_threads is not None:
            stack.callback(cv2.setNumThreads, cv2.getNumThreads())
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            cv2.setNumThreads(num_threads)
            torch.set_num_threads(num_threads)
        reader = open_source(source)
        stack.callback(reader.close)
        jsonl_file = None
        if jsonl is not None:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            jsonl_file = stack.enter_context(open(jsonl, "w", encoding="utf-8"))
        writer = None
        if display:
            cv2.namedWindow(window_name, cv2.WINDOW_NORMAL)
            stack.callback(cv2.destroyWindow, window_name)
        log.info("live: %s, detect every %d frame(s), classify every %d, smoothing %s, display %s", reader.name,
                 detect_every, classify_every, smoothing, display)

        start = last = time.perf_counter()
        try:
            while True:
                if max_frames is not None and reader.index >= max_frames:
                    stopped = "max_frames"
                    break
                t0 = time.perf_counter()
                item = reader.read()
                t1 = time.perf_counter()
                if item is None:
                    break
                index, image_bgr, seconds = item
                if image_bgr is None:  # a decode failure, already counted by the reader
                    continue
                stage_s["decode"] += t1 - t0

                frame = stream.step_frame(image_bgr, detector, index=index, stage_s=stage_s)  # detect, align, classify
                t2 = time.perf_counter()
                results = frame.rows()
                frames += 1
                faces_total += len(results)
                track_ids.update(r["track_id"] for r in results)
                now = time.perf_counter()
                fps = 1.0 / max(now - last, 1e-9) if frames == 1 else (
                    (1 - FPS_EMA_ALPHA) * fps + FPS_EMA_ALPHA / max(now - last, 1e-9))
                last = now
                if display or output is not None:
                    image_bgr = draw_faces(image_bgr, frame.faces, probs=frame.smoothed if frame.faces else None,
                                           class_names=stream.class_names, track_ids=frame.track_ids, show_bars=True)
                    cv2.putText(image_bgr, f"{fps:.1f} fps", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2,
                                cv2.LINE_AA)
                t3 = time.perf_counter()

                if jsonl_file is not None:
                    jsonl_file.write(json.dumps({"frame": index, "time": round(seconds, 4), "faces": results}) + "\n")
                if output is not None:
                    if writer is None:
                        writer = open_writer(Path(output), reader.fps, image_bgr)
                        stack.callback(writer.release)
                    writer.write(image_bgr)
                t4 = time.perf_counter()
                stage_s["draw"] += t3 - t2
                stage_s["write"] += t4 - t3

                if display:
                    cv2.imshow(window_name, image_bgr)
                    quit_now = handle_keys(window_name, image_bgr, index, Path(snapshot_dir))
                    stage_s["display"] += time.perf_counter() - t4  # includes time spent paused
                    if quit_now:
                        stopped = "quit"
                        break
        except KeyboardInterrupt:  # Ctrl+C, the way to stop a headless camera run: outputs are still closed properly
            stopped = "interrupted"
            log.info("live: interrupted")
        seconds_total = time.perf_counter() - start

    summary = {
        "source": reader.name,
        "frames": frames,
        "frames_failed": reader.failed,
        "frames_dropped": reader.dropped,
        "faces": faces_total,
        "tracks": len(track_ids),
        "seconds": round(seconds_total, 3),
        "mean_fps": round(frames / seconds_total, 2) if seconds_total > 0 else 0.0,
        "stage_ms": {stage: round(1000.0 * s / max(frames, 1), 3) for stage, s in stage_s.items()},
        "source_fps": round(reader.fps, 3),
        "stopped": stopped,
    }
    log.info("live summary: %s", summary)
    return summary


def speed_hint(summary: dict, classify_every: int, input_size: int) -> str | None:
    """A one-line suggestion when a run fell behind its source because classifying dominated (a CPU too slow for the
    model, docs/speed.md), else None. summary: run_live's; input_size: the classifier's (a 48 px model is the light
    choice already)."""
    fps, source_fps, stage_ms = summary.get("mean_fps", 0), summary.get("source_fps", 0), summary.get("stage_ms", {})
    classify_ms = stage_ms.get("classify", 0.0)
    if summary.get("frames", 0) < 30 or not source_fps or fps >= 0.9 * source_fps:
        return None
    if classify_ms < max((v for k, v in stage_ms.items() if k != "classify"), default=0.0):
        return None  # detection, drawing or the window is the bottleneck: a lighter classifier would not help
    lighter = " or a 48 px model (--checkpoint ferplus --backend onnxruntime)" if input_size > 48 else ""
    return (f"live ran at {fps:.1f} frames/s, below the source's {source_fps:.1f}; classifying took {classify_ms:.0f} ms "
            f"per frame: --classify-every {classify_every + 1}{lighter} is faster (docs/speed.md, Live)")
