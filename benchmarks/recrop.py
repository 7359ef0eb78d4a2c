"""How often the face stage finds the face again inside dataset crops (fer.face.recrop), per detection pass.

    python benchmarks/recrop.py --dataset rafdb --n 1000 --seed 1
    python benchmarks/recrop.py --dataset fer2013 --split private --n 1000

Prints, for a seeded random sample of the split, the found-rate of each pass alone and of the passes as
fer.face.recrop.detect_in_crop chains them, and where the found faces' eyes sit in the dataset's crops (eye distance and
eye height in units of the crop side) next to fer.face.align.TEMPLATE, the framing re-alignment produces.
"""

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.config import DataConfig  # noqa: E402
from fer.data.splits import read_split  # noqa: E402
from fer.face import FaceDetector  # noqa: E402
from fer.face.align import TEMPLATE  # noqa: E402
from fer.face.recrop import NATIVE_SIZES, PASSES, UPSCALE_TO, detect_in_crop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="rafdb", choices=tuple(NATIVE_SIZES))
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cfg = DataConfig(dataset=args.dataset, image_size=NATIVE_SIZES[args.dataset], channels=3)
    faces = read_split(cfg, args.split)
    pick = np.random.default_rng(args.seed).choice(len(faces), min(args.n, len(faces)), replace=False)
    detector = FaceDetector()
    found = {}
    for border_fraction, upscale in PASSES:
        hits = []
        for i in pick:
            image = faces.images[i]
            border = int(round(border_fraction * image.shape[0]))
            if border:
                image = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            if upscale:
                factor = max(1.0, UPSCALE_TO / faces.images.shape[1])
                image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
            hits.append(bool(detector.detect(image)))
        found[f"border {border_fraction:.0%}, {'upscaled' if upscale else 'as is'}"] = np.mean(hits)
    chained = [detect_in_crop(detector, faces.images[i]) for i in pick]
    print(f"{faces.name}: {len(pick)} crops (seed {args.seed})")
    for name, rate in found.items():
        print(f"  {name:<24} {rate:.1%}")
    print(f"  {'chained (detect_in_crop)':<24} {np.mean([f is not None for f in chained]):.1%}")
    side = faces.images.shape[1]
    units = np.array([(f.landmarks + 0.5) / side for f in chained if f is not None and f.landmarks is not None])
    for name, points in (("found faces in the crops", units), ("template (re-aligned)", TEMPLATE[None])):
        eye_distance = np.linalg.norm(points[:, 1] - points[:, 0], axis=1).mean()
        print(f"  {name:<24} eye distance {eye_distance:.3f}, eye height {points[:, :2, 1].mean():.3f} of the side")


if __name__ == "__main__":
    main()
