"""The server's inference: the public API's recognizer behind a pool of worker threads, with optional batching.

Each worker thread owns its face detectors (a FaceDetector is not thread-safe) and runs decode -> detect -> align
-> classify for one image (fer.predict.classify_faces and face_record, as ExpressionRecognizer.predict does), or one
WebSocket frame (fer.stream.FaceStream, as `live` does). The classifier is shared: with batching its predict goes
through one Batcher thread that merges the faces of concurrent requests; without, workers call it directly.

Threads: torch and OpenCV are set to one thread each and the pool gets one worker per core. On 2 busy cores one
classify of 1-3 faces took 85 ms with torch's 2 threads against 8 ms with one (the same effect fer.live.run_live
documents), so parallelism comes from the workers, not from inside the operators.
"""

import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

import fer
from fer.api import ExpressionRecognizer
from fer.face.detect import FaceDetector
from fer.predict import classify_faces, face_record
from fer.serve.batcher import Batcher
from fer.serve.images import decode_image
from fer.stream import FaceStream, check_settings

log = logging.getLogger(__name__)

PREDICT_MAX_SIDE = 640  # `run.py predict`'s detector size
LIVE_MAX_SIDE = 480  # `run.py live`'s: 480 px found as many faces as 640 px in 70 % of the time (fer/cli.py)


class _BatchedClassifier:
    """The classifier's interface (class_names, input_size, channels, predict) with predict routed through a Batcher."""

    def __init__(self, classifier, batcher: Batcher):
        self.class_names = classifier.class_names
        self.input_size = classifier.input_size
        self.channels = getattr(classifier, "channels", 1)
        self.predict = batcher.predict


def model_info(classifier, name: str) -> dict:
    """Name, version (sha256 prefix of the weight file: it changes whenever the weights do) and input of the model."""
    source = Path(getattr(classifier, "source", "") or "")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12] if source.is_file() else "unknown"
    spec = (getattr(classifier, "checkpoint", None) or {}).get("model_spec") or {}
    return {"name": name, "version": f"sha256:{digest}", "architecture": spec.get("name"),
            "classes": list(classifier.class_names), "input_size": int(classifier.input_size),
            "channels": int(getattr(classifier, "channels", 1)), "file": source.name, "fer_version": fer.__version__}


class Engine:
    """Args:
        model, backend, device, detector: as ExpressionRecognizer takes them ("default", "torch", "cpu", "yunet").
        yunet_model: another YuNet ONNX file (fer.face.FaceDetector's model_path).
        workers: threads that decode, detect and classify (default: one per core).
        batching: merge the faces of concurrent requests into one classifier call (see fer.serve.batcher).
        batch_window_s, max_batch: the batcher's settings.
        max_pixels: larger images are refused (413) before they are decoded.
        detect_every, classify_every, smoothing: the WebSocket streams' settings (fer.stream.FaceStream; `live`'s
            defaults).
    """

    def __init__(self, model: str = "default", backend: str = "torch", detector: str = "yunet",
                 yunet_model: str | None = None, device: str = "cpu", workers: int | None = None,
                 batching: bool = True, batch_window_s: float = 0.0, max_batch: int = 64,
                 max_pixels: int = 40_000_000, detect_every: int = 2, classify_every: int = 1,
                 smoothing: str = "ema:0.3", set_threads: bool = True):
        check_settings(detect_every, classify_every, smoothing)  # before the model loads, not at the first WebSocket
        if set_threads:
            torch.set_num_threads(1)
            cv2.setNumThreads(1)
        self.recognizer = ExpressionRecognizer(model, backend=backend, device=device,
                                               detector=FaceDetector(detector, model_path=yunet_model))
        self.detector_name, self.yunet_model = detector, yunet_model
        self.classifier = self.recognizer.classifier
        self.class_names = tuple(self.classifier.class_names)
        self.info = model_info(self.classifier, "default" if model in (None, "default") else Path(str(model)).stem)
        self.info["backend"] = backend
        self.workers = workers or os.cpu_count() or 1
        self.max_pixels = max_pixels
        self.detect_every, self.classify_every = detect_every, classify_every
        self.smoothing = smoothing
        self._active = 0  # requests and frames running in a worker now (the batcher waits for no more than these)
        self._active_lock = threading.Lock()
        self.batcher = (Batcher(self.classifier.predict, batch_window_s, max_batch, active=lambda: self._active)
                        if batching else None)
        if self.batcher is not None:
            self.shared_classifier = _BatchedClassifier(self.classifier, self.batcher)
        elif backend == "opencv":  # a cv2.dnn Net is not thread-safe: one call at a time
            self.shared_classifier = _LockedClassifier(self.classifier)
        else:
            self.shared_classifier = self.classifier  # torch and onnxruntime inference are thread-safe
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fer-worker")
        log.info("engine: model %s (%s), %d worker(s), batching %s", self.info["name"], self.info["version"],
                 self.workers, "on" if self.batcher else "off")

    def _detector(self, max_side: int) -> FaceDetector:
        detectors = getattr(self._local, "detectors", None)
        if detectors is None:
            detectors = self._local.detectors = {}
        if max_side not in detectors:
            detectors[max_side] = FaceDetector(self.detector_name, model_path=self.yunet_model,
                                                    max_side=max_side)
        return detectors[max_side]

    def _count(self, step: int) -> None:
        with self._active_lock:
            self._active += step

    def predict_bytes(self, data: bytes) -> tuple[list[dict], tuple[int, int]]:
        """Image file bytes -> (faces as `predict --json` lists them, (width, height)). Runs in a worker thread."""
        self._count(1)
        try:
            image_bgr = decode_image(data, self.max_pixels)
            return self.predict_image(image_bgr), (image_bgr.shape[1], image_bgr.shape[0])
        finally:
            self._count(-1)

    def predict_image(self, image_bgr: np.ndarray) -> list[dict]:
        faces = self._detector(PREDICT_MAX_SIDE).detect(image_bgr)
        probs = classify_faces(image_bgr, faces, self.shared_classifier)  # (N, K)
        return [face_record(face, row, self.class_names) for face, row in zip(faces, probs)]

    def new_stream(self) -> FaceStream:
        return FaceStream(self.shared_classifier, detect_every=self.detect_every, classify_every=self.classify_every,
                          smoothing=self.smoothing)

    def stream_bytes(self, stream: FaceStream, data: bytes) -> tuple[list[dict], tuple[int, int]]:
        """One JPEG (or PNG, WebP, BMP) frame of a stream -> its tracked, smoothed faces. Runs in a worker thread."""
        self._count(1)
        try:
            image_bgr = decode_image(data, self.max_pixels)
            return stream.step(image_bgr, self._detector(LIVE_MAX_SIDE)), (image_bgr.shape[1], image_bgr.shape[0])
        finally:
            self._count(-1)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()


class _LockedClassifier:
    def __init__(self, classifier):
        self.class_names = classifier.class_names
        self.input_size = classifier.input_size
        self.channels = getattr(classifier, "channels", 1)
        self._classifier = classifier
        self._lock = threading.Lock()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._classifier.predict(crops)
