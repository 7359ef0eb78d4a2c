"""Test-time augmentation: class probabilities averaged over views of each face.

Modes:
- "none":    the face itself (1 view).
- "flip":    the face and its mirror image (2 views).
- "tencrop": the 4 corner crops and the centre crop of side round(CROP_FRACTION * S), each resized back to S, plus their
             mirror images (10 views). This is the ten-crop commonly used on FER2013 (44 x 44 crops of the 48 x 48 faces,
             e.g. WuJie1010/Facial-Expression-Recognition.Pytorch); resizing back keeps the model's input size.

Views are built on float batches x (B, C, S, S) (C = 1 gray, 3 BGR colour: crops, resizes and flips act on every channel
alike); uint8 faces (B, S, S) or (B, S, S, 3) go through fer.data.transforms.to_tensor first, exactly as without
augmentation.
"""

import numpy as np
import torch
import torch.nn.functional as F

from fer.data.transforms import check_faces, to_tensor

MODES = ("none", "flip", "tencrop")
CROP_FRACTION = 44 / 48
NUM_VIEWS = {"none": 1, "flip": 2, "tencrop": 10}


def _as_batch(x) -> torch.Tensor:
    """uint8 faces (B, S, S) / (B, S, S, 3) or float x (B, C, S, S) -> float x (B, C, S, S)."""
    if isinstance(x, np.ndarray):
        return to_tensor(x)
    if not torch.is_tensor(x) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"expected uint8 faces (B, S, S) or (B, S, S, 3), or a float batch (B, C, S, S), got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    return x


def ten_crop(x: torch.Tensor, crop_fraction: float = CROP_FRACTION) -> torch.Tensor:
    """x (B, C, H, W) -> (10, B, C, H, W): corners and centre of a smaller crop, resized back, then their mirrors."""
    _, _, height, width = x.shape
    ch, cw = round(crop_fraction * height), round(crop_fraction * width)
    if not (0 < ch <= height and 0 < cw <= width):
        raise ValueError(f"crop_fraction {crop_fraction} gives a {ch} x {cw} crop of a {height} x {width} image")
    dy, dx = height - ch, width - cw
    corners = [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)]
    crops = [x[:, :, top:top + ch, left:left + cw] for top, left in corners]
    resized = [F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False) for crop in crops]
    views = torch.stack(resized)  # (5, B, C, H, W)
    return torch.cat([views, views.flip(-1)])


def views(x, mode: str = "none") -> torch.Tensor:
    """uint8 faces (B, S, S) / (B, S, S, 3) or float x (B, C, S, S) -> float views (V, B, C, S, S); V = NUM_VIEWS[mode]."""
    if mode not in MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; expected one of {', '.join(MODES)}")
    x = _as_batch(x)
    if mode == "none":
        return x.unsqueeze(0)
    if mode == "flip":
        return torch.stack([x, x.flip(-1)])
    return ten_crop(x)


@torch.inference_mode()
def tta_outputs(outputs_fn, x, mode: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """outputs_fn(x) -> (embeddings (B, D), probs (B, K)); returns both averaged over the views of x."""
    stacked = views(x, mode)
    n_views, batch = stacked.shape[:2]
    embeddings, probs = outputs_fn(stacked.flatten(0, 1))  # one forward pass over (V * B, C, S, S)
    return embeddings.view(n_views, batch, -1).mean(0), probs.view(n_views, batch, -1).mean(0)


def predict_faces(classifier, faces: np.ndarray, mode: str = "none", batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 faces (N, S, S) gray or (N, S, S, 3) BGR, as the classifier takes them -> (embeddings float32 (N, D),
    probs float32 (N, K)) under the TTA mode."""
    faces = check_faces(faces, classifier.input_size, getattr(classifier, "channels", 1))
    if mode not in MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; expected one of {', '.join(MODES)}")
    step = max(1, batch_size // NUM_VIEWS[mode])  # keep the forward batch near batch_size whatever the view count
    embeddings, probs = [], []
    for start in range(0, len(faces), step):
        e, p = tta_outputs(classifier.outputs, faces[start:start + step], mode)
        embeddings.append(e.float().numpy())
        probs.append(p.numpy())
    if not probs:
        return np.zeros((0, classifier.embedding_dim), np.float32), np.zeros((0, len(classifier.class_names)), np.float32)
    return np.concatenate(embeddings), np.concatenate(probs)
