"""One video stream's faces over time, one call per frame: the per-frame step shared by `live` (fer.live.run_live),
the server's WebSocket streams and video reports.

Each `FaceStream.step` detects on every `detect_every`-th frame and tracks in between (track_faces,
fer.tracking.IouTracker), aligns and classifies the frame's faces in one batch (every face, or with classify_every > 1
the faces whose turn it is), and smooths each track's probabilities (fer.tracking.ProbabilitySmoother). Faces come back
in the format of a `live --jsonl` row's faces: {"box": [x, y, w, h], "track_id": int, "label": str, "probabilities":
{class name: p}}, label and probabilities smoothed. `step_frame` gives the same frame with the tracks, the detector's
Faces and the smoothed array as well (what `live` draws). A stream is not thread-safe: call step from one thread at a
time (the detector may differ between calls).
"""

import dataclasses
import time

import numpy as np

from fer.face.align import align_face
from fer.tracking import IouTracker, ProbabilitySmoother, Track, classification_due

# Probability smoothing: ema:0.3 cuts the label flicker within a track sharply while still
# following a real change within 2 frames (1 - 0.7^2 = 51 % of the new probabilities); figures: docs/speed.md, Live.
DEFAULT_SMOOTHING = "ema:0.3"


def check_int(name: str, value, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be {'None or ' if optional else ''}an int >= {minimum}, got {value!r}")


def check_settings(detect_every: int, classify_every: int, smoothing: str) -> ProbabilitySmoother:
    """A stream's settings checked (a ValueError naming the bad one); returns the smoother the smoothing spec makes."""
    check_int("detect_every", detect_every, 1)
    check_int("classify_every", classify_every, 1)
    return ProbabilitySmoother.from_spec(smoothing)


def track_faces(image_bgr: np.ndarray, detect: bool, detector, tracker: IouTracker,
                last_face: dict) -> tuple[list[Track], list]:
    """Detect (or, between detections, predict) this frame's faces; returns visible tracks and their Faces by id.

    last_face maps track id -> the Face of its last matched detection; predicted frames reuse its score and move its
    landmarks with the box. Entries of expired tracks are dropped.
    """
    if detect:
        detections = detector.detect(image_bgr)
        tracks = tracker.update([f.box for f in detections], [f.landmarks for f in detections])
        pairs = sorted(zip(tracks, detections), key=lambda pair: pair[0].track_id)  # the order predict() gives
        tracks, faces = [t for t, _ in pairs], [f for _, f in pairs]
        last_face.update((t.track_id, f) for t, f in pairs)
    else:
        tracks = tracker.predict()
        faces = [dataclasses.replace(last_face[t.track_id], box=tuple(int(round(v)) for v in t.box),
                                     landmarks=t.landmarks) for t in tracks]
    for track_id in set(last_face) - tracker.track_ids:
        del last_face[track_id]
    return tracks, faces


@dataclasses.dataclass
class FrameFaces:
    """One stepped frame: visible tracks and their Faces (track-id order), smoothed probabilities (N, K) float32."""

    tracks: list[Track]
    faces: list
    smoothed: np.ndarray
    class_names: list[str]

    @property
    def track_ids(self) -> list[int]:
        return [t.track_id for t in self.tracks]

    def rows(self) -> list[dict]:
        """The faces as JSON-ready dicts (the module docstring's format)."""
        return [{"box": [int(v) for v in face.box], "track_id": track.track_id,
                 "label": self.class_names[int(np.argmax(row))],
                 "probabilities": {name: round(float(q), 5) for name, q in zip(self.class_names, row)}}
                for track, face, row in zip(self.tracks, self.faces, self.smoothed)]


class FaceStream:
    """Args:
        classifier: class_names, input_size, channels (1 when absent) and predict(uint8 faces) -> probs (N, K).
        detect_every, classify_every, smoothing, motion, max_missed, iou_threshold: as in fer.live.run_live.
    """

    def __init__(self, classifier, *, detect_every: int = 2, classify_every: int = 1, smoothing: str = DEFAULT_SMOOTHING,
                 motion: str = "hold", max_missed: int = 15, iou_threshold: float = 0.3):
        self.smoother = check_settings(detect_every, classify_every, smoothing)
        self.classifier = classifier
        self.class_names = list(classifier.class_names)
        self.size, self.channels = int(classifier.input_size), int(getattr(classifier, "channels", 1))
        self.detect_every, self.classify_every = detect_every, classify_every
        self.tracker = IouTracker(iou_threshold=iou_threshold, max_missed=max_missed, motion=motion)
        self.last_face = {}  # track id -> Face of its last detection (track_faces)
        self.frames = 0  # frames stepped so far

    def step(self, image_bgr: np.ndarray, detector) -> list[dict]:
        """image_bgr uint8 (H, W, 3) -> this frame's faces (see the module docstring), in track-id order."""
        return self.step_frame(image_bgr, detector).rows()

    def step_frame(self, image_bgr: np.ndarray, detector, index: int | None = None,
                   stage_s: dict | None = None) -> FrameFaces:
        """As step, returning the FrameFaces. index: the frame's number in its source (detection and classification
        turns follow it; None: the frames stepped so far, right when no frame is skipped). stage_s: seconds are added
        to its "detect" (detect or track), "align" and "classify" entries."""
        index = self.frames if index is None else index
        self.frames += 1
        t0 = time.perf_counter()
        tracks, faces = track_faces(image_bgr, index % self.detect_every == 0, detector, self.tracker, self.last_face)
        self.smoother.prune(self.tracker.track_ids)
        t1 = time.perf_counter()
        track_ids = [t.track_id for t in tracks]
        due = classification_due(track_ids, index, self.classify_every, self.smoother)  # (N,) bool
        probs = np.zeros((0, len(self.class_names)), np.float32)
        crops = None
        if due.any():
            crops = np.stack([align_face(image_bgr, face, self.size, channels=self.channels)
                              for face, d in zip(faces, due) if d])  # (D, S, S[, 3]) uint8, D due faces
        t2 = time.perf_counter()
        if crops is not None:
            probs = np.asarray(self.classifier.predict(crops), dtype=np.float32)  # (D, K)
            if probs.shape != (len(crops), len(self.class_names)):
                raise ValueError(f"classifier.predict returned shape {probs.shape}, expected "
                                 f"{(len(crops), len(self.class_names))}")
        t3 = time.perf_counter()
        if stage_s is not None:
            for stage, seconds in (("detect", t1 - t0), ("align", t2 - t1), ("classify", t3 - t2)):
                stage_s[stage] += seconds
        smoothed = self.smoother.update_frame(track_ids, due, probs)  # (N, K), also for N = 0
        return FrameFaces(tracks, faces, smoothed, self.class_names)
