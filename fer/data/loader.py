"""Batches from in-memory uint8 faces: shuffled (or class-balanced) order, augmentation, float tensors."""

import numpy as np
import torch

from fer.data.readers import FaceSet
from fer.data.transforms import to_tensor


def class_balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class weights inversely proportional to frequency, mean 1 over the samples."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights


class TrainBatches:
    """One epoch of augmented batches. The order depends only on (seed, epoch), so a resumed run sees the same batches.

    Data parallel: batch_size is the global batch; rank r of world_size yields slice r (batch_size / world_size images)
    of each global batch, so the ranks' shards are disjoint and together are exactly the one-process epoch.
    """

    def __init__(self, faces: FaceSet, batch_size: int, augmentation=None, seed: int = 0, balanced: bool = False,
                 rank: int = 0, world_size: int = 1):
        self.faces, self.batch_size, self.augmentation, self.seed, self.balanced = faces, batch_size, augmentation, seed, balanced
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.faces) // self.batch_size  # drop the last partial batch: BatchNorm dislikes tiny batches

    def epoch(self, epoch: int, start_batch: int = 0):
        """Yield (x (B, C, S, S) float32, C = 1 gray or 3 BGR, labels (B,) int64) for batches start_batch.. of this epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.faces)
        if self.balanced:
            class_weights = class_balanced_weights(self.faces.labels, len(self.faces.class_names))
            p = class_weights[self.faces.labels]
            order = rng.choice(n, size=n, replace=True, p=p / p.sum())
        else:
            order = rng.permutation(n)
        per_rank = self.batch_size // self.world_size
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            index = index[self.rank * per_rank:(self.rank + 1) * per_rank]  # this rank's slice (all of it for one process)
            images = self.faces.images[index]
            if self.augmentation is not None:
                # Seeded by (seed, epoch, batch) alone, so a run resumed mid-epoch augments exactly like a straight run;
                # ranks > 1 add their rank (the one-process stream stays as it was, so the draws differ from it).
                key = [self.seed, epoch, b] if self.world_size == 1 else [self.seed, epoch, b, self.rank]
                self.augmentation.set_random_seed(int(np.random.default_rng(key).integers(2**31)))
                images = np.stack([self.augmentation(image=image)["image"] for image in images])
            yield to_tensor(images), torch.from_numpy(self.faces.labels[index])


def eval_batches(faces: FaceSet, batch_size: int, start: int = 0, stop: int | None = None):
    """Batches of faces[start:stop] in order (stop None: the end)."""
    stop = len(faces) if stop is None else stop
    for first in range(start, stop, batch_size):
        last = min(first + batch_size, stop)
        yield to_tensor(faces.images[first:last]), torch.from_numpy(faces.labels[first:last])
