"""How well does detect + align reproduce FER2013 framing? Measures the alignment template.

FER2013 PrivateTest faces (48x48) are pasted into real background photos at a random size, position and in-plane
rotation (seeded). Each paste is a known similarity transform G (crop -> frame), so for every detected face we know
exactly which crop the classifier was trained to see. Reported:

- detection rate (YuNet, optionally Haar) and extra detections,
- geometry: where YuNet's landmarks fall inside the original 48x48 crop (mean and std, unit = crop side), i.e. the
  template that reproduces the training framing; fitted on the first half of the faces,
- for each candidate template, on the second half: framing error (mean distance in 48-px units between the aligned
  crop's corners and the true crop's corners) and pixel MAE between the aligned crop and the original crop,
- with a classifier (fer.inference.Classifier.load(--checkpoint)), accuracy on the original crops and on the aligned
  crops of each candidate, and how often the aligned crop gets the same prediction as the original crop.

Run: python benchmarks/pasted_faces.py [--n 500] [--seed 0] [--checkpoint fer2013] [--haar]
Shared data is read in place from $FER_SHARED or <repo>/../shared.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer.face.align import alignment_matrix, box_matrix, warp_face  # noqa: E402
from fer.face.detect import FaceDetector  # noqa: E402

SHARED = Path(os.environ.get("FER_SHARED", REPO.parent / "shared"))
BACKGROUNDS = ("coffee_noface.png", "rocket_noface.jpg", "chelsea_cat_noface.png")
FRAME_W, FRAME_H = 640, 480
SIZE = 48
# ArcFace / InsightFace 112x112 five-point template (arcface_torch utils), a tight face crop, for contrast.
ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32) / 112.0


def load_faces(root: Path, n: int, seed: int):
    files = sorted(root.glob("*/PrivateTest_*.jpg"))
    if not files:
        raise FileNotFoundError(f"no PrivateTest_*.jpg under {root}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
    faces, labels = [], []
    for i in sorted(pick):
        img = cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE)
        if img is None or img.shape != (SIZE, SIZE):
            raise ValueError(f"{files[i]}: expected a 48x48 gray image")
        faces.append(img)
        labels.append(files[i].parent.name)
    return faces, labels


def extend(face: np.ndarray) -> np.ndarray:
    """48x48 -> 144x144: the face in the middle, a blurred mirror of it around (a plausible surround, no hard edge)."""
    padded = cv2.copyMakeBorder(face, SIZE, SIZE, SIZE, SIZE, cv2.BORDER_REFLECT_101)
    blurred = cv2.GaussianBlur(padded, (0, 0), 6)
    blurred[SIZE:2 * SIZE, SIZE:2 * SIZE] = face
    return blurred


def paste(face: np.ndarray, background: np.ndarray, rng):
    """Frame (H, W, 3) with the face pasted, and G (3x3) mapping original-crop pixels to frame pixels."""
    side = rng.uniform(96, 288)  # face crop side in the frame: faces of ~70-200 px, YuNet's comfortable range
    angle = np.deg2rad(rng.uniform(-25, 25))
    cx = rng.uniform(side * 0.6, FRAME_W - side * 0.6)
    cy = rng.uniform(side * 0.6, FRAME_H - side * 0.6)
    s = side / SIZE
    rot = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    c = (SIZE - 1) / 2  # crop centre, pixel-centre convention
    g = np.eye(3)
    g[:2, :2] = rot
    g[:2, 2] = np.array([cx, cy]) - rot @ np.array([c, c])
    ext_to_crop = np.array([[1, 0, -SIZE], [0, 1, -SIZE], [0, 0, 1]], dtype=np.float64)
    m = (g @ ext_to_crop)[:2]
    frame = background.copy()
    patch = cv2.cvtColor(extend(face), cv2.COLOR_GRAY2BGR)
    cv2.warpAffine(patch, m, (FRAME_W, FRAME_H), dst=frame, flags=cv2.INTER_CUBIC,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return frame, g


def match(faces, g):
    """The detection nearest the pasted face centre (within half a crop side), or None."""
    centre = g[:2] @ np.array([(SIZE - 1) / 2, (SIZE - 1) / 2, 1.0])
    side = np.sqrt(abs(np.linalg.det(g[:2, :2]))) * SIZE
    best, best_d = None, side / 2
    for f in faces:
        x, y, w, h = f.box
        d = np.hypot(x + w / 2 - centre[0], y + h / 2 - centre[1])
        if d < best_d:
            best, best_d = f, d
    return best


def to_crop_units(points: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Frame pixels -> unit coordinates of the original crop ((pixel + 0.5) / 48)."""
    inv = np.linalg.inv(g)
    p = np.c_[points, np.ones(len(points))] @ inv[:2].T
    return (p + 0.5) / SIZE


def framing_error(matrix: np.ndarray, g: np.ndarray) -> float:
    """Mean distance (48-px units) between where the true crop's corners land in the aligned crop and its corners."""
    corners = np.array([[-0.5, -0.5, 1], [SIZE - 0.5, -0.5, 1], [-0.5, SIZE - 0.5, 1], [SIZE - 0.5, SIZE - 0.5, 1]])
    a = np.vstack([matrix, [0, 0, 1]])
    mapped = corners @ (a @ g)[:2].T
    return float(np.mean(np.linalg.norm(mapped - corners[:, :2], axis=1)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="for fer.inference.Classifier.load; omit to skip accuracy")
    parser.add_argument("--haar", action="store_true", help="also run the Haar backend (slow, ~50 ms a frame)")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(args.threads)

    faces, labels = load_faces(SHARED / "data/fer2013/test", args.n, args.seed)
    backgrounds = [cv2.resize(cv2.imread(str(SHARED / "media" / b)), (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA)
                   for b in BACKGROUNDS]
    yunet = FaceDetector("yunet", model_path=SHARED / "models/face_detection_yunet_2023mar.onnx")
    haar = FaceDetector("haar") if args.haar else None
    rng = np.random.default_rng(args.seed)

    records = []  # (index, frame, g, yunet Face or None, haar Face or None)
    n_extra = 0
    t0 = time.perf_counter()
    for i, face in enumerate(faces):
        frame, g = paste(face, backgrounds[i % len(backgrounds)], rng)
        found = yunet.detect(frame)
        hit = match(found, g)
        n_extra += len(found) - (hit is not None)
        haar_hit = match(haar.detect(frame), g) if haar else None
        records.append((i, frame, g, hit, haar_hit))
    n = len(records)
    hits = [r for r in records if r[3] is not None]
    print(f"{n} FER2013 PrivateTest faces pasted (seed {args.seed}), {time.perf_counter() - t0:.1f} s")
    print(f"YuNet detection rate {len(hits) / n:.3f} ({len(hits)}/{n}), extra detections {n_extra}")
    if haar:
        haar_hits = [r for r in records if r[4] is not None]
        with_eyes = sum(r[4].landmarks is not None for r in haar_hits)
        print(f"Haar detection rate {len(haar_hits) / n:.3f}, with both eyes {with_eyes}/{len(haar_hits)}")

    fit, held = hits[: len(hits) // 2], hits[len(hits) // 2:]
    units = np.stack([to_crop_units(r[3].landmarks, r[2]) for r in fit])  # (F, 5, 2)
    measured = units.mean(axis=0)
    median = np.median(units, axis=0)
    sym = measured.copy()  # mirror-symmetric version: average left/right, nose and mouth centred
    for a, b in ((0, 1), (3, 4)):
        y = (measured[a, 1] + measured[b, 1]) / 2
        dx = (measured[b, 0] - measured[a, 0]) / 2
        sym[a], sym[b] = (0.5 - dx, y), (0.5 + dx, y)
    sym[2, 0] = 0.5
    names = ("right eye", "left eye", "nose", "right mouth", "left mouth")
    print(f"\nYuNet landmarks in the 48x48 crop, unit = crop side, mean (std) over {len(fit)} faces:")
    for k, name in enumerate(names):
        print(f"  {name:12s} x {measured[k, 0]:.4f} ({units[:, k, 0].std():.3f})  "
              f"y {measured[k, 1]:.4f} ({units[:, k, 1].std():.3f})")
    eye_y = units[:, :2, 1].mean()
    eye_dist = np.linalg.norm(units[:, 1] - units[:, 0], axis=1)
    print(f"  eye y {eye_y:.4f}, eye distance {eye_dist.mean():.4f} (std {eye_dist.std():.4f})")
    print("  median template: " + np.array2string(median, precision=4, separator=", ").replace("\n", ""))
    print("  symmetric template: " + np.array2string(sym, precision=4, separator=", ").replace("\n", ""))

    boxes = []
    for r in fit:
        x, y, w, h = r[3].box
        c = to_crop_units(np.array([[x + w / 2, y + h / 2]]), r[2])[0]
        s = np.sqrt(abs(np.linalg.det(r[2][:2, :2])))
        boxes.append((max(w, h) / s / SIZE, c[1], h / s / SIZE))
    boxes = np.array(boxes)
    print(f"  YuNet box: max side {boxes[:, 0].mean():.3f} of the crop, centre y {boxes[:, 1].mean():.3f}")
    if haar:
        hb = []
        for r in records:
            if r[4] is None:
                continue
            x, y, w, h = r[4].box
            c = to_crop_units(np.array([[x + w / 2, y + h / 2]]), r[2])[0]
            s = np.sqrt(abs(np.linalg.det(r[2][:2, :2])))
            hb.append((max(w, h) / s / SIZE, c[1], h / s / SIZE, c[0]))
        hb = np.array(hb)
        # crop side / box side, and how far below the box centre the crop centre lies (in box heights)
        print(f"  Haar box: max side {hb[:, 0].mean():.3f} of the crop -> BOX_CROP_SCALE {1 / hb[:, 0].mean():.3f}; "
              f"crop centre below box centre by {((0.5 - hb[:, 1]) / hb[:, 2]).mean():.3f} box heights "
              f"(BOX_CROP_SHIFT); centre x {hb[:, 3].mean():.3f}")

    candidates = {
        "oracle (true paste transform)": lambda f, g: np.linalg.inv(g)[:2],
        "align.TEMPLATE (ALIGN_POINTS)": lambda f, g: alignment_matrix(f.landmarks, SIZE),
        "measured eyes": lambda f, g: alignment_matrix(f.landmarks, SIZE, measured, (0, 1)),
        "measured 5pt": lambda f, g: alignment_matrix(f.landmarks, SIZE, measured, (0, 1, 2, 3, 4)),
        "symmetric eyes": lambda f, g: alignment_matrix(f.landmarks, SIZE, sym, (0, 1)),
        "symmetric 5pt": lambda f, g: alignment_matrix(f.landmarks, SIZE, sym, (0, 1, 2, 3, 4)),
        "median 5pt": lambda f, g: alignment_matrix(f.landmarks, SIZE, median, (0, 1, 2, 3, 4)),
        "arcface 5pt (tight)": lambda f, g: alignment_matrix(f.landmarks, SIZE, ARCFACE, (0, 1, 2, 3, 4)),
        "YuNet box, align.box_matrix": lambda f, g: box_matrix(f.box, SIZE),
    }
    classifier = None
    if args.checkpoint is not None:
        from fer.inference import Classifier  # the classifier stage; only needed for accuracy
        classifier = Classifier.load(args.checkpoint)
        if classifier.input_size != SIZE:
            raise ValueError(f"this benchmark builds {SIZE}x{SIZE} crops; the classifier wants {classifier.input_size}")
        class_index = {name: k for k, name in enumerate(classifier.class_names)}
        all_true = np.array([class_index[lb] for lb in labels])
        all_orig = classifier.predict(np.stack(faces)).argmax(1)
        held_idx = [r[0] for r in held]
        print(f"\naccuracy on all {n} original crops {np.mean(all_orig == all_true):.4f}; "
              f"on the {len(held)} held-out detected faces' original crops "
              f"{np.mean(all_orig[held_idx] == all_true[held_idx]):.4f}")
    print(f"\non the {len(held)} held-out YuNet-detected faces (BORDER_REPLICATE):")
    print(f"  {'alignment':34s} {'framing err px: mean':>20s} {'median':>6s} {'pixel MAE':>10s}" + ("  accuracy  agrees" if classifier else ""))
    rows = [(name, make, [(r[0], r[1], r[2], r[3]) for r in held]) for name, make in candidates.items()]
    if haar:
        with_eyes = [(r[0], r[1], r[2], r[4]) for r in records if r[4] is not None and r[4].landmarks is not None]
        no_eyes = [(r[0], r[1], r[2], r[4]) for r in records if r[4] is not None and r[4].landmarks is None]
        rows.append((f"Haar with eyes ({len(with_eyes)})", lambda f, g: alignment_matrix(f.landmarks, SIZE), with_eyes))
        rows.append((f"Haar box, no eyes ({len(no_eyes)})", lambda f, g: box_matrix(f.box, SIZE), no_eyes))
        rows.append((f"Haar with eyes, box ({len(with_eyes)})", lambda f, g: box_matrix(f.box, SIZE), with_eyes))
    for name, make, group in rows:
        errs, maes, crops = [], [], []
        for i, frame, g, f in group:
            mat = make(f, g)
            crop = warp_face(frame, mat, SIZE)
            errs.append(framing_error(mat, g))
            maes.append(np.abs(crop.astype(np.float32) - faces[i]).mean())
            crops.append(crop)
        line = f"  {name:34s} {np.mean(errs):20.2f} {np.median(errs):6.2f} {np.mean(maes):10.2f}"
        if classifier:
            pred = classifier.predict(np.stack(crops)).argmax(1)
            idx = [gr[0] for gr in group]
            # agrees: same prediction as on the original crop (framing fidelity, meaningful even for a weak model)
            line += f"  {np.mean(pred == all_true[idx]):8.4f}  {np.mean(pred == all_orig[idx]):6.4f}"
        print(line)


if __name__ == "__main__":
    main()
