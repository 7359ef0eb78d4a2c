"""Turn a class-folder dataset of raw photos into aligned face crops (gray or colour) plus a manifest, once.

Input:  src_root/<class>/<file>.{jpg,jpeg,png,bmp,tif,tiff,webp} (one level; extensions in any case).
Output: dst_root/<class>/<stem>.png (uint8 size x size, gray for channels 1 or colour for channels 3, the input of the
        model to be trained; "_2", "_3" ... added on name clashes) and
        dst_root/manifest.csv with one row per source file:
          path       source file relative to src_root (POSIX separators)
          class      class name (after class_map)
          status     ok (one face) / several_faces / no_face / unreadable
          crop       crop file relative to dst_root; empty unless ok or several_faces
          num_faces  faces found (0 for no_face and unreadable)
          box        "x y w h" of the face cropped; landmarks "x1 y1 ... x5 y5" (YuNet order, 1 decimal) or empty;
          score      detector score of the face cropped
          error      why an unreadable file could not be read
several_faces: the largest face (the detector sorts by area) is cropped and kept, its row records how many faces
there were, so a reader can keep or drop those crops; the crops stay in the class folders.

Resumable: a source already in the manifest is skipped when its crop exists (ok / several_faces) or it has no crop
by design (no_face / unreadable: the same detector would say the same). Rows whose crop is missing are dropped from
the manifest and redone. Each row is appended and flushed right after its crop is written, so an interrupted run
loses at most one file. Delete a row (or the manifest) to redo a file. The crop size, channels and detector are not recorded:
use a fresh dst_root when changing them.
"""

import csv
import logging
import os
from collections import Counter
from pathlib import Path

import cv2
from tqdm import tqdm

from fer.face.align import align_face
from fer.face.detect import read_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("path", "class", "status", "crop", "num_faces", "box", "landmarks", "score", "error")
STATUSES = ("ok", "several_faces", "no_face", "unreadable")


def preprocess_folder(src_root, dst_root, detector, size: int = 48, class_map: dict | None = None, channels: int = 1) -> dict:
    """Detect + align every image of src_root/<class>/ into dst_root (see the module docstring).

    class_map: folder name -> class name, or -> None to skip that folder on purpose; with a class_map every folder
    must be listed (ValueError otherwise). Returns a summary: counts per status over the whole manifest, per class,
    how many files this run processed and resumed, and how many non-image files / skipped folders were ignored.
    """
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise FileNotFoundError(f"source folder not found: {src_root}")
    if dst_root.resolve().is_relative_to(src_root.resolve()):
        raise ValueError(f"dst_root {dst_root} must not be inside src_root {src_root} (it would be read as a class)")
    sources, ignored, skipped_folders = _list_sources(src_root, class_map)
    if ignored:
        log.warning("%s: ignored %d non-image file(s) or sub-folder(s), e.g. %s", src_root, len(ignored), ignored[0])
    dst_root.mkdir(parents=True, exist_ok=True)
    manifest = dst_root / MANIFEST
    rows = _load_manifest(manifest, dst_root)  # path -> row, only finished ones
    used_crops = {row["crop"] for row in rows.values() if row["crop"]}
    pending = [(rel, cls) for rel, cls in sources if rel not in rows]
    log.info("%s: %d source files, %d already in %s, %d to do", src_root, len(sources), len(sources) - len(pending),
             manifest, len(pending))

    new_file = not manifest.exists()
    with open(manifest, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        if new_file:
            writer.writeheader()
        for rel, cls in tqdm(pending, desc="preprocess", unit="img", disable=None):
            row = _process_one(src_root / rel, rel, cls, dst_root, detector, size, used_crops, channels)
            writer.writerow(row)
            f.flush()
            rows[rel] = row

    status_counts = Counter(row["status"] for row in rows.values())
    per_class: dict[str, Counter] = {}
    for row in rows.values():
        per_class.setdefault(row["class"], Counter())[row["status"]] += 1
    summary = {
        "manifest": str(manifest),
        "total": len(rows),
        **{status: status_counts.get(status, 0) for status in STATUSES},
        "processed": len(pending),
        "resumed": len(sources) - len(pending),
        "ignored_files": len(ignored),
        "skipped_folders": skipped_folders,
        "per_class": {cls: dict(counts) for cls, counts in sorted(per_class.items())},
    }
    log.info("preprocess summary: %s", {k: v for k, v in summary.items() if k != "per_class"})
    return summary


def _list_sources(src_root: Path, class_map: dict | None):
    """Sorted (relative path, class) pairs, the ignored entries, and the folders skipped via class_map."""
    sources, ignored, skipped = [], [], []
    for entry in sorted(src_root.iterdir()):
        if not entry.is_dir():
            ignored.append(entry.name)
            continue
        if class_map is None:
            cls = entry.name
        elif entry.name not in class_map:
            raise ValueError(f"{src_root}: folder '{entry.name}' is not in class_map (map it to None to skip it)")
        else:
            cls = class_map[entry.name]
        if cls is None:
            skipped.append(entry.name)
            continue
        for file in sorted(entry.iterdir()):
            rel = f"{entry.name}/{file.name}"
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                sources.append((rel, str(cls)))
            else:
                ignored.append(rel)
    return sources, ignored, skipped


def _load_manifest(manifest: Path, dst_root: Path) -> dict[str, dict]:
    """Finished rows of an existing manifest by source path; rewrites it when rows had to be dropped."""
    if not manifest.exists():
        return {}
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise ValueError(f"{manifest}: unexpected columns {reader.fieldnames}, expected {list(MANIFEST_FIELDS)}")
        all_rows = list(reader)
    rows = {}
    for line, row in enumerate(all_rows, start=2):
        if row["status"] not in STATUSES:
            raise ValueError(f"{manifest}:{line}: unknown status {row['status']!r}")
        if row["status"] in ("ok", "several_faces") and not (dst_root / row["crop"]).is_file():
            continue  # crop lost (e.g. interrupted before the row's crop was kept): redo
        rows[row["path"]] = row  # a later row for the same source wins
    if len(rows) != len(all_rows):
        log.info("%s: dropping %d row(s) with missing crops or duplicates; they will be redone",
                 manifest, len(all_rows) - len(rows))
        tmp = manifest.with_name(manifest.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(rows.values())
        os.replace(tmp, manifest)
    return rows


def _process_one(path: Path, rel: str, cls: str, dst_root: Path, detector, size: int, used_crops: set,
                 channels: int = 1) -> dict:
    row = dict.fromkeys(MANIFEST_FIELDS, "")
    row.update(path=rel, **{"class": cls}, num_faces=0)
    try:
        image = read_image(path)
    except (FileNotFoundError, ValueError) as e:
        log.warning("unreadable: %s", e)
        row.update(status="unreadable", error=str(e))
        return row
    faces = detector.detect(image)
    if not faces:
        row.update(status="no_face")
        return row
    face = faces[0]  # largest
    crop = align_face(image, face, size, channels=channels)  # (S, S) gray or (S, S, 3) BGR, which cv2.imwrite expects
    crop_rel = _unique_crop(cls, Path(rel).stem, used_crops)
    target = dst_root / crop_rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), crop):
        raise OSError(f"could not write crop {target}")
    row.update(
        status="ok" if len(faces) == 1 else "several_faces",
        crop=crop_rel,
        num_faces=len(faces),
        box=" ".join(str(v) for v in face.box),
        landmarks="" if face.landmarks is None else " ".join(f"{v:.1f}" for v in face.landmarks.ravel()),
        score=f"{face.score:.4f}",
    )
    return row


def _unique_crop(cls: str, stem: str, used: set) -> str:
    candidate, k = f"{cls}/{stem}.png", 1
    while candidate in used:
        k += 1
        candidate = f"{cls}/{stem}_{k}.png"
    used.add(candidate)
    return candidate
