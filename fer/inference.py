"""Classifier: aligned uint8 faces in, class probabilities out. Used by evaluate, predict and live."""

import numpy as np
import torch

from fer.checkpoint import load_model
from fer.data.transforms import to_tensor
from fer.device import resolve_device, to_device


class Classifier:
    def __init__(self, model: torch.nn.Module, class_names, input_size: int, prob_scale: float, source: str = "",
                 device: str = "cpu"):
        self.device = resolve_device(device, key="--device")
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.class_names = tuple(class_names)
        self.input_size = input_size
        self.prob_scale = prob_scale  # s for cosine heads (probs = softmax(s * cos)), 1 for logits
        self.source = source

    @classmethod
    def load(cls, checkpoint: str | None = None, device: str = "cpu") -> "Classifier":
        """checkpoint: None (the shipped default), a shipped model name ('fer2013', 'rafdb') or a path.
        device: auto | cpu | cuda (checkpoints are stored on the CPU and load on any device)."""
        model, ckpt = load_model(checkpoint)
        spec = ckpt["model_spec"]
        return cls(model, ckpt["class_names"], spec["image_size"], spec["prob_scale"], ckpt["path"], device)

    @torch.inference_mode()
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, S, S) float -> embeddings (B, D), probs (B, K), on the CPU."""
        x = to_device(x, self.device).contiguous(memory_format=torch.channels_last)
        embeddings, outputs = self.model.forward_both(x)
        return embeddings.cpu(), torch.softmax(outputs.float() * self.prob_scale, dim=1).cpu()

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """faces uint8 (N, S, S) -> probabilities float32 (N, K)."""
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (self.input_size, self.input_size) or faces.dtype != np.uint8:
            raise ValueError(f"faces must be uint8 (N, {self.input_size}, {self.input_size}), got {faces.dtype} {faces.shape}")
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return self.outputs(to_tensor(faces))[1].numpy()
