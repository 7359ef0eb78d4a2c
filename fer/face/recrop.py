"""Re-framing a dataset's face crop: find the face again inside a tight crop and align it like predict/live do.

YuNet misses faces that fill a small frame (RAF-DB's 100x100 aligned crops, FER2013's 48x48 crops), so detection runs on
the crop enlarged, then as is, then inside a black border; replicated borders did worse than none. PASSES tries the best
first and falls back. The found-rate of each pass is measured by benchmarks/recrop.py; its figures are in
docs/datasets.md. Landmarks and box come back in the crop's own pixels.
"""

import cv2
import numpy as np

from fer.data import registry
from fer.face.align import align_face
from fer.face.detect import Face

UPSCALE_TO = 200  # short side in pixels the crop is enlarged to before detection (2x for RAF-DB's 100 px)
# (border as a fraction of the side, upscaled?) in the order tried; the border is constant black (see the docstring).
PASSES = ((0.0, True), (0.0, False), (0.5, True))
# Side of each dataset's stored crops (fer.data.registry): re-alignment reads them at this size, in colour, first.
NATIVE_SIZES = {name: registry.DATASETS[name].native_size for name in registry.sources()}


def detect_in_crop(detector, image_bgr: np.ndarray) -> Face | None:
    """The largest face of a dataset crop after the passes of PASSES, in image_bgr's pixels; None when every pass misses."""
    height, width = image_bgr.shape[:2]
    for border_fraction, upscale in PASSES:
        border = int(round(border_fraction * max(height, width)))
        framed = cv2.copyMakeBorder(image_bgr, border, border, border, border, cv2.BORDER_CONSTANT, value=(0, 0, 0)) \
            if border else image_bgr
        factor = max(1.0, UPSCALE_TO / min(height, width)) if upscale else 1.0
        if factor > 1.0:
            framed = cv2.resize(framed, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        found = detector.detect(framed)
        if not found:
            continue
        face = found[0]  # largest first
        x, y, w, h = (np.asarray(face.box, np.float64) / factor) - (border, border, 0, 0)
        x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
        box = (x0, y0, max(1, min(width, int(round(x + w))) - x0), max(1, min(height, int(round(y + h))) - y0))
        landmarks = None if face.landmarks is None else (face.landmarks / factor - border).astype(np.float32)
        return Face(box=box, landmarks=landmarks, score=face.score)
    return None


def realign_crop(detector, image_bgr: np.ndarray, size: int, channels: int = 1) -> np.ndarray | None:
    """The crop's face aligned to (size, size) with the pipeline's template (fer.face.align), or None when not found."""
    face = detect_in_crop(detector, image_bgr)
    return None if face is None else align_face(image_bgr, face, size, channels=channels)
