"""Face tracks across video frames and per-track smoothing of class probabilities. numpy + scipy only.

Boxes are float (x, y, w, h) in pixels. `IouTracker` gives each face a stable integer id by matching boxes
on intersection-over-union (Hungarian assignment, as SORT does: Bewley et al. 2016, arXiv 1602.00763, but
with no motion model beyond an optional constant velocity). Between detections (detect every k-th frame) `predict`
holds each visible track's box still (motion="hold", the default) or moves it by its last per-frame change
(motion="velocity"). Hold is the default because it predicts the next detections as well or better and opens fewer
ids (docs/speed.md, Live): velocity from jittery detections adds noise, it would only pay for faces moving fast and
steadily.
`ProbabilitySmoother` keeps an exponential or window mean of each track's probabilities; `classification_due` says
which tracks a frame classifies when each track is classified only every k-th frame (live on slow CPUs).
"""

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

MOTIONS = ("hold", "velocity")


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in boxes_a (N, 4) with every box in boxes_b (M, 4), both (x, y, w, h); returns (N, M)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    inter_w = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])  # (N, M)
    inter_h = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class Track:
    """One tracked face. `box` is the detection when matched this frame, else the prediction."""

    track_id: int
    box: np.ndarray  # (4,) float64 x, y, w, h
    landmarks: np.ndarray | None  # (5, 2) float32, moved with the box between detections
    velocity: np.ndarray  # (4,) box change per frame, from the last two matched detections
    last_detection: np.ndarray  # (4,) the box of the last matched detection
    hits: int = 1  # detections matched so far
    time_since_update: int = 0  # frames since the last matched detection
    visible: bool = True  # matched at the last detection frame

    def move_to(self, box: np.ndarray) -> None:
        """Set the box and carry the landmarks along (same offset and scale relative to the box)."""
        box = box.copy()
        box[2:] = np.maximum(box[2:], 1.0)
        if self.landmarks is not None:
            relative = (self.landmarks - self.box[:2]) / np.maximum(self.box[2:], 1e-6)
            self.landmarks = (relative * box[2:] + box[:2]).astype(np.float32)
        self.box = box


class IouTracker:
    """Stable ids for face boxes. Call exactly one of `update` (detection frame) or `predict` (other frames) per frame.

    Args:
        iou_threshold: a detection joins a track only if their IoU is at least this (0..1).
        max_missed: a track is dropped once it has gone more than this many frames without a matching detection.
        motion: "hold" keeps boxes still between detections; "velocity" moves them by their last per-frame change.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 15, motion: str = "hold"):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.motion = motion
        self.tracks: list[Track] = []
        self.next_id = 1

    def _advance(self) -> None:
        for track in self.tracks:
            track.time_since_update += 1
            if self.motion == "velocity" and track.visible:
                track.move_to(track.box + track.velocity)

    def predict(self) -> list[Track]:
        """Advance one frame without detections; returns the visible tracks with their predicted boxes."""
        self._advance()
        return [track for track in self.tracks if track.visible]

    def update(self, boxes: np.ndarray, landmarks: list[np.ndarray | None] | None = None) -> list[Track]:
        """Advance one frame and match this frame's detections (N, 4); returns the N tracks in detection order."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if landmarks is None:
            landmarks = [None] * len(boxes)
        if len(landmarks) != len(boxes):
            raise ValueError(f"got {len(boxes)} boxes but {len(landmarks)} landmark entries")
        self._advance()

        iou = iou_matrix([t.box for t in self.tracks], boxes)  # (T, N)
        rows, cols = linear_sum_assignment(-iou) if iou.size else (np.empty(0, int), np.empty(0, int))
        matched = {c: r for r, c in zip(rows, cols) if iou[r, c] >= self.iou_threshold}

        result = []
        for i, box in enumerate(boxes):
            lm = None if landmarks[i] is None else np.asarray(landmarks[i], dtype=np.float32).reshape(5, 2)
            if i in matched:
                track = self.tracks[matched[i]]
                track.velocity = (box - track.last_detection) / track.time_since_update
                track.box, track.landmarks, track.last_detection = box.copy(), lm, box.copy()
                track.hits += 1
                track.time_since_update = 0
            else:
                track = Track(self.next_id, box.copy(), lm, np.zeros(4), box.copy())
                self.next_id += 1
                self.tracks.append(track)
            result.append(track)

        kept = []
        for track in self.tracks:
            track.visible = track.time_since_update == 0
            if not track.visible:
                track.velocity = np.zeros(4)  # an unseen face is held where it was last seen
            if track.time_since_update <= self.max_missed:
                kept.append(track)
        self.tracks = kept
        return result

    @property
    def track_ids(self) -> set[int]:
        return {track.track_id for track in self.tracks}


class ProbabilitySmoother:
    """Per-track smoothing of probability vectors (K,).

    EMA: smoothed_t = alpha * probs_t + (1 - alpha) * smoothed_{t-1}, starting from the first probs (alpha=1: none).
    Window: the plain mean of the last `window` probability vectors of the track.
    Give exactly one of alpha or window; `from_spec` builds one from "ema:0.5", "mean:5" or "none".
    """

    def __init__(self, alpha: float | None = None, window: int | None = None):
        if (alpha is None) == (window is None):
            raise ValueError("give exactly one of alpha or window")
        if alpha is not None and not 0.0 < alpha <= 1.0:
            raise ValueError(f"smoothing alpha must be in (0, 1], got {alpha}")
        if window is not None and window < 1:
            raise ValueError(f"smoothing window must be >= 1, got {window}")
        self.alpha = alpha
        self.window = window
        self.state: dict[int, np.ndarray | deque] = {}

    @classmethod
    def from_spec(cls, spec: str) -> "ProbabilitySmoother":
        """"ema:ALPHA" (0 < ALPHA <= 1), "mean:N" (N >= 1 frames) or "none"."""
        kind, _, value = str(spec).strip().lower().partition(":")
        try:
            if kind == "none" and not value:
                return cls(alpha=1.0)
            if kind == "ema":
                return cls(alpha=float(value))
            if kind == "mean":
                return cls(window=int(value))
        except ValueError as error:
            raise ValueError(f"smoothing {spec!r}: {error}") from None
        raise ValueError(f"smoothing must be 'ema:ALPHA', 'mean:N' or 'none', got {spec!r}")

    def update(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        """Add this frame's probs (K,) for the track; returns its smoothed probs (K,) float32."""
        probs = np.asarray(probs, dtype=np.float64)
        if self.window is not None:
            history = self.state.setdefault(track_id, deque(maxlen=self.window))
            history.append(probs)
            return np.mean(history, axis=0).astype(np.float32)
        previous = self.state.get(track_id)
        smoothed = probs if previous is None else self.alpha * probs + (1.0 - self.alpha) * previous
        self.state[track_id] = smoothed
        return smoothed.astype(np.float32)

    def current(self, track_id: int) -> np.ndarray:
        """The track's smoothed probs (K,) float32 as the last update left them; KeyError for a track never updated."""
        state = self.state[track_id]
        return (np.mean(state, axis=0) if self.window is not None else state).astype(np.float32)

    def update_frame(self, track_ids, due, probs: np.ndarray) -> np.ndarray:
        """One frame: the due tracks (bool per track) take their rows of probs (one row per due track, in order), the
        others keep their current smoothed probs. Returns the smoothed probs of every track (N, K) float32."""
        rows = iter(np.asarray(probs))
        smoothed = [self.update(t, next(rows)) if d else self.current(t) for t, d in zip(track_ids, due)]
        return np.array(smoothed, dtype=np.float32).reshape(len(smoothed), np.shape(probs)[-1])

    def prune(self, track_ids: set[int]) -> None:
        """Forget tracks that are no longer alive."""
        for track_id in set(self.state) - set(track_ids):
            del self.state[track_id]


def classification_due(track_ids, frame_index: int, every: int, smoother: ProbabilitySmoother) -> np.ndarray:
    """Which tracks (bool (N,)) this frame classifies when each is classified every `every`-th frame.

    A track is due when (frame_index + track_id) % every == 0, so that with several faces the classifier's work is
    spread over the frames instead of landing on the same ones, and always on its first frame (nothing to hold yet).
    The others keep their smoothed probabilities until their next turn. every=1: every track on every frame.
    """
    return np.array([(frame_index + t) % every == 0 or t not in smoother.state for t in track_ids], dtype=bool)
