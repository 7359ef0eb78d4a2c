"""Inference backends behind fer.inference.Classifier's interface: torch, onnxruntime, OpenCV's cv2.dnn.

load_classifier(checkpoint, backend) takes a shipped name, a .pt checkpoint (exported to ONNX in memory for the ONNX
backends, fer.export) or a .onnx file written by `run.py export --onnx` (its metadata gives the class names and input
spec). Faces are normalised by fer.data.transforms.to_tensor in every backend (fer.inference.predict_probs).
"""

import logging

import numpy as np
import torch

from fer.checkpoint import load_model, resolve_checkpoint
from fer.export import INPUT_NAME, OUTPUT_NAMES, onnx_bytes, read_onnx
from fer.inference import Classifier, predict_probs

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "opencv")


class _OnnxInfo:
    """What the ONNX backends share: the interface attributes, from the model's metadata (fer.export.read_onnx)."""

    def __init__(self, info: dict, source: str):
        self.class_names = info["class_names"]
        self.input_size = info["input"]["size"]
        self.channels = info["input"]["channels"]
        self.embedding_dim = info["embedding_dim"]
        self.source = source
        self.checkpoint = {"path": source, "class_names": list(self.class_names), "model_spec": info["model_spec"],
                           "config": info["config"], "calibration": info["calibration"]}

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """faces uint8 (N, S, S) (gray) or (N, S, S, 3) (BGR colour) -> probabilities float32 (N, K)."""
        return predict_probs(self, faces)


class OnnxRuntimeClassifier(_OnnxInfo):
    def __init__(self, model_bytes: bytes, info: dict, source: str = "", num_threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise ValueError("--backend onnxruntime needs the onnxruntime package: pip install 'fer-toolkit[onnx]'") from None
        super().__init__(info, source)
        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1  # one small graph: no parallel branches to run
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) float -> embeddings (B, D), probs (B, K)."""
        probs, embeddings = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(embeddings), torch.from_numpy(probs)


class OpenCVClassifier(_OnnxInfo):
    def __init__(self, model_bytes: bytes, info: dict, source: str = ""):
        import cv2

        super().__init__(info, source)
        self.net = cv2.dnn.readNetFromONNX(np.frombuffer(model_bytes, np.uint8))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) float -> embeddings (B, D), probs (B, K)."""
        self.net.setInput(np.ascontiguousarray(x.numpy()), INPUT_NAME)
        probs, embeddings = self.net.forward(list(OUTPUT_NAMES))
        return torch.from_numpy(embeddings.copy()), torch.from_numpy(probs.copy())


def load_classifier(checkpoint=None, backend: str = "torch", num_threads: int | None = None, device: str = "cpu"):
    """A classifier for a shipped name (None / 'default': the default model), a .pt checkpoint or a fer .onnx file.

    device: auto | cpu | cuda for the torch backend; the ONNX backends run on the CPU ('cuda' is an error there).
    num_threads: onnxruntime's intra-op threads (None: its default, one per core). torch and OpenCV threads are
    process-wide settings (torch.set_num_threads, cv2.setNumThreads; run_live sets both).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    path = resolve_checkpoint(checkpoint)
    if backend == "torch":
        return Classifier.load(path, device)  # a .onnx path is refused there, naming the ONNX backends
    if device == "cuda":
        raise ValueError(f"--device cuda runs with --backend torch; the {backend} backend here runs on the CPU")
    if path.suffix == ".onnx":
        model_bytes = path.read_bytes()
    else:
        model, ckpt = load_model(path)
        model_bytes = onnx_bytes(model, ckpt["model_spec"], ckpt["class_names"], ckpt.get("config"),
                                 ckpt.get("calibration"))
        log.info("exported %s to ONNX in memory for the %s backend", path, backend)
    info = read_onnx(model_bytes, str(path))
    if backend == "onnxruntime":
        return OnnxRuntimeClassifier(model_bytes, info, str(path), num_threads=num_threads)
    return OpenCVClassifier(model_bytes, info, str(path))
