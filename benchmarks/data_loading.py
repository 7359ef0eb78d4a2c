"""Data loading speed on real FER2013: decode time of every split, then augmented training images/s.

    python benchmarks/data_loading.py [--data-root ../shared/data] [--batches 200]

Target: all of FER2013 decodes in < 30 s; augmentation >= 5,000 images/s on 2 cores for 48x48 gray, so that
the loader never limits training (training rates: docs/speed.md).
"""

import argparse
import time

import cv2

from fer.config import AugmentConfig
from fer.data.loader import TrainBatches
from fer.data.paths import dataset_path
from fer.data.readers import read_fer2013_folder
from fer.data.transforms import build_augmentation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    root = dataset_path("fer2013", root=args.data_root)
    started = time.perf_counter()
    splits = {split: read_fer2013_folder(root, split) for split in ("train", "public", "private")}
    decode_s = time.perf_counter() - started
    total = sum(len(faces) for faces in splits.values())
    print(f"decode all of FER2013: {total} images in {decode_s:.1f} s ({total / decode_s:.0f} images/s)")

    for name, augment in (("default (flip, rotate, shift, zoom)", AugmentConfig()),
                          ("+ erase + brightness/contrast", AugmentConfig(erase=0.25, brightness_contrast=0.5))):
        batches = TrainBatches(splits["train"], args.batch_size, build_augmentation(augment, 48), seed=0)
        count, started = 0, time.perf_counter()
        for i, (x, _) in enumerate(batches.epoch(0)):
            count += len(x)
            if i + 1 == args.batches:
                break
        elapsed = time.perf_counter() - started
        print(f"augmented batches, {name}: {count / elapsed:.0f} images/s (one thread, {count} images)")


if __name__ == "__main__":
    main()
