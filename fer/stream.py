"""One video stream's faces over time, one call per frame: the per-frame step of fer.live.run_live for callers that
bring their own frames (the server's WebSocket, video reports).

Each `FaceStream.step` detects on every `detect_every`-th frame and tracks in between (fer.live.track_faces,
fer.tracking.IouTracker), aligns and classifies the frame's faces in one batch (every face, or with classify_every > 1
the faces whose turn it is), and smooths each track's
probabilities (fer.tracking.ProbabilitySmoother). Faces come back in the format of a `live --jsonl` row's faces:
{"box": [x, y, w, h], "track_id": int, "label": str, "probabilities": {class name: p}}, label and probabilities
smoothed. A stream is not thread-safe: call step from one thread at a time (the detector may differ between calls).
"""

import numpy as np

from fer.face.align import align_face
from fer.live import DEFAULT_SMOOTHING, check_int, track_faces
from fer.tracking import IouTracker, ProbabilitySmoother, classification_due


def check_settings(detect_every: int, classify_every: int, smoothing: str) -> ProbabilitySmoother:
    """A stream's settings checked (a ValueError naming the bad one); returns the smoother the smoothing spec makes."""
    check_int("detect_every", detect_every, 1)
    check_int("classify_every", classify_every, 1)
    return ProbabilitySmoother.from_spec(smoothing)


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
        self.last_face = {}  # track id -> Face of its last detection (fer.live.track_faces)
        self.frames = 0  # frames stepped so far

    def step(self, image_bgr: np.ndarray, detector) -> list[dict]:
        """image_bgr uint8 (H, W, 3) -> this frame's faces (see the module docstring), in track-id order."""
        index = self.frames
        self.frames += 1
        tracks, faces = track_faces(image_bgr, index % self.detect_every == 0, detector, self.tracker, self.last_face)
        self.smoother.prune(self.tracker.track_ids)
        if not faces:
            return []
        track_ids = [t.track_id for t in tracks]
        due = classification_due(track_ids, index, self.classify_every, self.smoother)  # (N,) bool
        probs = np.zeros((0, len(self.class_names)), np.float32)
        if due.any():
            crops = np.stack([align_face(image_bgr, face, self.size, channels=self.channels)
                              for face, d in zip(faces, due) if d])
            probs = np.asarray(self.classifier.predict(crops), dtype=np.float32)  # (D, K), D due faces
            if probs.shape != (len(crops), len(self.class_names)):
                raise ValueError(f"classifier.predict returned shape {probs.shape}, expected "
                                 f"{(len(crops), len(self.class_names))}")
        smoothed = self.smoother.update_frame(track_ids, due, probs)  # (N, K)
        return [{"box": [int(v) for v in face.box], "track_id": track_id,
                 "label": self.class_names[int(np.argmax(row))],
                 "probabilities": {name: round(float(q), 5) for name, q in zip(self.class_names, row)}}
                for track_id, face, row in zip(track_ids, faces, smoothed)]
