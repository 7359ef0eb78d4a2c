"""One video stream's faces over time, one call per frame: the per-frame step of fer.live.run_live for callers that
bring their own frames (the server's WebSocket, video reports).

Each `FaceStream.step` detects on every `detect_every`-th frame and tracks in between (fer.live.track_faces,
fer.tracking.IouTracker), aligns and classifies all faces of the frame in one batch, and smooths each track's
probabilities (fer.tracking.ProbabilitySmoother). Faces come back in the format of a `live --jsonl` row's faces:
{"box": [x, y, w, h], "track_id": int, "label": str, "probabilities": {class name: p}}, label and probabilities
smoothed. A stream is not thread-safe: call step from one thread at a time (the detector may differ between calls).
"""

import numpy as np

from fer.face.align import align_face
from fer.live import DEFAULT_SMOOTHING, check_int, track_faces
from fer.tracking import IouTracker, ProbabilitySmoother


class FaceStream:
    """Args:
        classifier: class_names, input_size, channels (1 when absent) and predict(uint8 faces) -> probs (N, K).
        detect_every, smoothing, motion, max_missed, iou_threshold: as in fer.live.run_live.
    """

    def __init__(self, classifier, *, detect_every: int = 2, smoothing: str = DEFAULT_SMOOTHING, motion: str = "hold",
                 max_missed: int = 15, iou_threshold: float = 0.3):
        check_int("detect_every", detect_every, 1)
        self.classifier = classifier
        self.class_names = list(classifier.class_names)
        self.size, self.channels = int(classifier.input_size), int(getattr(classifier, "channels", 1))
        self.detect_every = detect_every
        self.smoother = ProbabilitySmoother.from_spec(smoothing)
        self.tracker = IouTracker(iou_threshold=iou_threshold, max_missed=max_missed, motion=motion)
        self.last_face = {}  # track id -> Face of its last detection (fer.live.track_faces)
        self.frames = 0  # frames stepped so far

    def step(self, image_bgr: np.ndarray, detector) -> list[dict]:
        """image_bgr uint8 (H, W, 3) -> this frame's faces (see the module docstring), in track-id order."""
        detect = self.frames % self.detect_every == 0
        self.frames += 1
        tracks, faces = track_faces(image_bgr, detect, detector, self.tracker, self.last_face)
        self.smoother.prune(self.tracker.track_ids)
        if not faces:
            return []
        crops = np.stack([align_face(image_bgr, face, self.size, channels=self.channels) for face in faces])
        probs = np.asarray(self.classifier.predict(crops), dtype=np.float32)  # (N, K)
        if probs.shape != (len(faces), len(self.class_names)):
            raise ValueError(f"classifier.predict returned shape {probs.shape}, expected "
                             f"{(len(faces), len(self.class_names))}")
        results = []
        for track, face, row in zip(tracks, faces, probs):
            smoothed = self.smoother.update(track.track_id, row)  # (K,)
            results.append({"box": [int(v) for v in face.box], "track_id": track.track_id,
                            "label": self.class_names[int(np.argmax(smoothed))],
                            "probabilities": {name: round(float(q), 5) for name, q in zip(self.class_names, smoothed)}})
        return results
