"""Augmentation (albumentations) and the uint8 -> float tensor conversion every model input goes through.

Faces are uint8 (S, S) gray or (S, S, 3) colour in BGR order (OpenCV's); batches stack them to (B, S, S) or (B, S, S, 3).
"""

import os

# albumentations asks PyPI for a newer version on import (network, and a warning offline); fer never downloads.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fer.config import AugmentConfig  # noqa: E402


def build_augmentation(cfg: AugmentConfig, image_size: int) -> A.Compose:
    """Training-time augmentation of uint8 faces, gray (S, S) or BGR (S, S, 3) (every step takes both); the reference
    recipe is rotation 10, shift 0.1, zoom 0.1, flip.

    Optional, off by default: random resized crop (crop_scale), brightness/contrast, random erasing (erase).
    Batch-level mixup/cutmix live in fer/recipe.py (they mix tensors and labels, not single images).
    """
    steps = []
    if cfg.crop_scale < 1:  # torchvision's RandomResizedCrop: a random area fraction and aspect ratio, resized back
        steps.append(A.RandomResizedCrop(size=(image_size, image_size), scale=(cfg.crop_scale, 1.0), p=1.0))
    steps.append(A.HorizontalFlip(p=cfg.hflip))
    if cfg.rotate or cfg.shift or cfg.scale:
        steps.append(A.Affine(rotate=(-cfg.rotate, cfg.rotate), translate_percent=(-cfg.shift, cfg.shift),
                              scale=(1 - cfg.scale, 1 + cfg.scale), border_mode=cv2.BORDER_REPLICATE, p=1.0))
    if cfg.brightness_contrast:
        steps.append(A.RandomBrightnessContrast(0.2, 0.2, p=cfg.brightness_contrast))
    if cfg.erase:
        side = (image_size // 8, image_size // 3)
        steps.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=side, hole_width_range=side, p=cfg.erase))
    return A.Compose(steps)


def face_shape(size: int, channels: int) -> tuple[int, ...]:
    """The shape of one face a model with this input takes: (S, S) gray or (S, S, 3) BGR."""
    return (size, size) if channels == 1 else (size, size, channels)


def check_faces(faces: np.ndarray, size: int, channels: int) -> np.ndarray:
    """faces as a uint8 (N, *face_shape(size, channels)) array, or ValueError saying what was expected and got."""
    faces = np.asarray(faces)
    expected = face_shape(size, channels)
    if faces.dtype != np.uint8 or faces.ndim != len(expected) + 1 or faces.shape[1:] != expected:
        what = "gray" if channels == 1 else "BGR colour"
        raise ValueError(f"faces must be uint8 (N, {', '.join(map(str, expected))}) ({what}, the model's input), "
                         f"got {faces.dtype} {faces.shape}")
    return faces


def to_tensor(faces: np.ndarray) -> torch.Tensor:
    """uint8 (B, S, S) gray -> float32 (B, 1, S, S); uint8 (B, S, S, 3) BGR -> float32 (B, 3, S, S), channels kept in
    BGR order. Values in [-1, 1] (x / 255 * 2 - 1, as mini-Xception's reference preprocessing); the result is contiguous."""
    if faces.dtype != np.uint8 or not (faces.ndim == 3 or faces.ndim == 4 and faces.shape[3] == 3):
        raise ValueError(f"faces must be uint8 (B, S, S) gray or (B, S, S, 3) BGR, got {faces.dtype} {faces.shape}")
    x = torch.from_numpy(faces)
    x = x.unsqueeze(1) if faces.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()  # uint8 copy: 4x cheaper than float
    return x.float().mul_(2 / 255).sub_(1)
