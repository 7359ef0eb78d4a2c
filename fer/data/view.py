"""The model's view of a batch when the model takes smaller or gray input than the data holds.

A student distilled from a teacher at a larger size (e.g. the 112 px colour face_resnet into a 48 px gray small
ResNet) trains on the teacher's batches: the teacher sees the batch as loaded and augmented, the student the same faces
downsampled (antialiased bilinear) and, from BGR, turned gray with OpenCV's BGR2GRAY weights. The face stage's
framing is a template scaled by the size, so a downsampled aligned face is framed as predict aligns it at the
student's size. Batches are normalised linearly and alike in every channel (fer.data.transforms.to_tensor), so the
weighted sum of normalised channels is the normalised gray face.
"""

import torch
import torch.nn.functional as F

BGR_TO_GRAY = (0.114, 0.587, 0.299)  # cv2.COLOR_BGR2GRAY: 0.299 R + 0.587 G + 0.114 B, channels in BGR order


def model_view(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """x (B, C, S, S) normalised faces -> (B, channels, size, size); x itself where nothing changes."""
    if x.shape[1] == 3 and channels == 1:
        weights = torch.tensor(BGR_TO_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(1, keepdim=True)
    elif x.shape[1] != channels:
        raise ValueError(f"cannot view {x.shape[1]}-channel faces as {channels}-channel input")
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x
