"""Classifier: aligned uint8 faces in, class probabilities out. Used by evaluate, predict and live.

This is the torch backend; fer/backends.py has the ONNX ones (onnxruntime, cv2.dnn) behind the same interface:
class_names, input_size, channels, embedding_dim, checkpoint (its path, class names, model spec, training config and
calibration),
outputs(x float (B, C, S, S)) -> (embeddings (B, D), probs (B, K)) as torch tensors, and predict(faces) -> probs.
"""

import numpy as np
import torch

from fer.calibration import temperature_of
from fer.checkpoint import input_shape, load_model
from fer.data.transforms import check_faces, to_tensor
from fer.device import resolve_device, to_device
from fer.models.fold import fold_batchnorm
from fer.models.freeze import freeze_for_cpu


def predict_probs(classifier, faces) -> np.ndarray:
    """Every backend's predict: check, normalise with to_tensor (the one place), classifier.outputs -> probs (N, K)."""
    faces = check_faces(faces, classifier.input_size, classifier.channels)
    if len(faces) == 0:
        return np.zeros((0, len(classifier.class_names)), np.float32)
    return classifier.outputs(to_tensor(faces))[1].numpy()


class Classifier:
    def __init__(self, model: torch.nn.Module, class_names, input_size: int, prob_scale: float, source: str = "",
                 channels: int = 1, checkpoint: dict | None = None, device: str = "cpu", temperature: float = 1.0):
        self.device = resolve_device(device, key="--device")
        # Batch norms folded into the convolutions: the same outputs with fewer ops (fer/models/fold.py).
        self.model = fold_batchnorm(model).to(self.device, memory_format=torch.channels_last)
        self.class_names = tuple(class_names)
        self.input_size = input_size
        self.channels = channels  # 1: gray faces (N, S, S); 3: BGR faces (N, S, S, 3)
        # On the CPU a frozen TorchScript graph of the same model (fer/models/freeze.py): fused ops, same outputs.
        self._forward_both = self.model.forward_both
        if self.device.type == "cpu" and hasattr(torch.jit, "freeze"):
            self._forward_both = freeze_for_cpu(self.model, input_size, channels)
        self.prob_scale = prob_scale  # s for cosine heads (probs = softmax(s * cos)), 1 for logits
        self.temperature = float(temperature)  # probs = softmax(logits / T), fer.calibration; 1: uncalibrated
        self.source = source
        self.checkpoint = checkpoint or {"path": source, "class_names": list(class_names), "model_spec": {}, "config": {}}

    @property
    def embedding_dim(self) -> int:
        return self.model.embedding_dim

    @classmethod
    def load(cls, checkpoint: str | None = None, device: str = "cpu") -> "Classifier":
        """checkpoint: None (the shipped default), a shipped model name ('fer2013', 'rafdb') or a path.
        device: auto | cpu | cuda (checkpoints are stored on the CPU and load on any device)."""
        model, ckpt = load_model(checkpoint)
        spec = ckpt["model_spec"]
        size, channels = input_shape(spec)
        info = {key: ckpt.get(key) or {} for key in ("model_spec", "config", "warm_start", "calibration")}
        info.update(path=ckpt["path"], class_names=list(ckpt["class_names"]))
        return cls(model, ckpt["class_names"], size, spec["prob_scale"], ckpt["path"],
                   channels=channels, checkpoint=info, device=device, temperature=temperature_of(ckpt))

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) float -> embeddings (B, D), uncalibrated logits prob_scale * outputs (B, K), on the device."""
        x = to_device(x, self.device).contiguous(memory_format=torch.channels_last)
        embeddings, outputs = self._forward_both(x)
        return embeddings, outputs.float() * self.prob_scale

    @torch.inference_mode()
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, S, S) float -> embeddings (B, D), probs softmax(logits / T) (B, K), on the CPU."""
        embeddings, logits = self.logits(x)
        if self.temperature != 1.0:  # uncalibrated checkpoints: exactly the operations from before calibration
            logits = logits / self.temperature
        return embeddings.cpu(), torch.softmax(logits, dim=1).cpu()

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """faces uint8 (N, S, S) (gray) or (N, S, S, 3) (BGR colour) -> probabilities float32 (N, K)."""
        return predict_probs(self, faces)
