"""Live loop speed on a video file, headless: end-to-end frames/s and per-stage ms for detect_every in (1, 2, 3).

    python benchmarks/live_fps.py                       # the shared clip, the shipped default classifier
    python benchmarks/live_fps.py --checkpoint runs/x/best.pt --threads 2 --max-side 640
    python benchmarks/live_fps.py --motion              # also: how well hold / velocity predict boxes
    python benchmarks/live_fps.py --smoothing           # also: label flicker for smoothing settings
    python benchmarks/live_fps.py --cadence             # also: classifying each face every 1st/2nd/3rd frame

Each setting runs run_live twice over the clip: "jsonl" (JSONL only, nothing drawn) and "+mp4" (also draws and
writes the annotated video). Timings are wall-clock on whatever else the machine is doing; the load average is
printed with them.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.face.detect import FaceDetector  # noqa: E402
from fer.inference import Classifier  # noqa: E402
from fer.live import STAGES, run_live  # noqa: E402
from fer.tracking import IouTracker, ProbabilitySmoother, iou_matrix  # noqa: E402

SHARED = Path(os.environ.get("FER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CLIP = SHARED / "media" / "short_hamilton_clip.mp4"


def speed_table(args, classifier, detector) -> None:
    # warm-up: first-call costs
    run_live(args.source, classifier, detector, display=False, max_frames=10, num_threads=args.threads)
    header = f"{'k':>2} {'run':>6} {'fps':>7} " + " ".join(f"{s:>8}" for s in STAGES) + f" {'faces':>6} {'tracks':>6}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.detect_every:
            for run, output in (("jsonl", None), ("+mp4", Path(tmp) / "annotated.mp4")):
                summary = run_live(args.source, classifier, detector, display=False, detect_every=k,
                                   output=output, jsonl=Path(tmp) / "frames.jsonl", max_frames=args.max_frames,
                                   num_threads=args.threads)
                ms = " ".join(f"{summary['stage_ms'][s]:8.2f}" for s in STAGES)
                print(f"{k:>2} {run:>6} {summary['mean_fps']:7.1f} {ms} {summary['faces']:>6} {summary['tracks']:>6}")


def motion_table(args, detector) -> None:
    """Detect on every frame once, then replay detecting every k-th frame: predicted boxes vs the real detections."""
    capture = cv2.VideoCapture(str(args.source))
    detections = []
    while True:
        ok, image_bgr = capture.read()
        if not ok:
            break
        detections.append(np.array([f.box for f in detector.detect(image_bgr)], dtype=np.float64).reshape(-1, 4))
    capture.release()
    print(f"\nbox prediction between detections ({len(detections)} frames; IoU of each predicted box with its best "
          "detection on skipped frames; 'lost' = IoU < 0.5)")
    print(f"{'k':>2} {'motion':>8} {'mean IoU':>9} {'lost %':>7} {'ids':>4}")
    for k in (2, 3, 4, 6):
        for motion in ("hold", "velocity"):
            tracker = IouTracker(motion=motion)
            best = []
            for i, boxes in enumerate(detections):
                if i % k == 0:
                    tracker.update(boxes)
                    continue
                predicted = [t.box for t in tracker.predict()]
                if predicted:
                    iou = iou_matrix(predicted, boxes)
                    best.extend(iou.max(axis=1) if iou.shape[1] else np.zeros(len(predicted)))
            best = np.array(best)
            print(f"{k:>2} {motion:>8} {best.mean():9.3f} {100 * (best < 0.5).mean():7.1f} {tracker.next_id - 1:>4}")


def smoothing_table(args, classifier, detector) -> None:
    """Label flicker (label changes per 100 face frames within a track) for smoothing settings, from one raw run."""
    with tempfile.TemporaryDirectory() as tmp:
        run_live(args.source, classifier, detector, display=False, smoothing="none", jsonl=Path(tmp) / "raw.jsonl",
                 num_threads=args.threads)
        rows = [json.loads(line) for line in (Path(tmp) / "raw.jsonl").read_text().splitlines()]
    faces = [(f["track_id"], np.array(list(f["probabilities"].values()))) for r in rows for f in r["faces"]]
    print(f"\nlabel flicker ({len(faces)} face frames; changes of the argmax label within a track per 100 face frames)")
    print(f"{'smoothing':>10} {'changes/100':>12}")
    for spec in ("none", "ema:0.7", "ema:0.5", "ema:0.3", "ema:0.2", "mean:5", "mean:10"):
        smoother, last_label, changes = ProbabilitySmoother.from_spec(spec), {}, 0
        for track_id, probs in faces:
            label = int(np.argmax(smoother.update(track_id, probs)))
            changes += track_id in last_label and last_label[track_id] != label
            last_label[track_id] = label
        print(f"{spec:>10} {100 * changes / max(len(faces), 1):12.1f}")


def cadence_table(args, classifier, detector) -> None:
    """Classifying each face every c-th frame (run_live's classify_every) at detect_every 2: frame rate, classify ms
    per frame, and how often the reported (smoothed) label agrees with classifying every frame, per face frame."""
    labels, lines = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for every in (1, 2, 3):
            path = Path(tmp) / f"c{every}.jsonl"
            summary = run_live(args.source, classifier, detector, display=False, detect_every=2, classify_every=every,
                               jsonl=path, max_frames=args.max_frames, num_threads=args.threads)
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            labels[every] = {(r["frame"], f["track_id"]): f["label"] for r in rows for f in r["faces"]}
            same = [labels[every].get(key) == label for key, label in labels[1].items()]
            lines.append(f"{every:>2} {summary['mean_fps']:7.1f} {summary['stage_ms']['classify']:9.2f} "
                         f"{100 * np.mean(same):10.1f} {len(same):>6}")
    print("\nclassify every c-th frame (detect every 2nd; label agreement with c = 1 over its face frames)")
    print(f"{'c':>2} {'fps':>7} {'classify':>9} {'agree %':>10} {'faces':>6}")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(CLIP), help="video file (default: the shared Hamilton clip)")
    parser.add_argument("--checkpoint", default=None, help="classifier checkpoint (default: the shipped model)")
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="cv2 and torch threads (1 wins on 2 shared cores)")
    parser.add_argument("--max-side", type=int, default=480, help="detector input long side")
    parser.add_argument("--motion", action="store_true", help="also print the box-prediction table")
    parser.add_argument("--smoothing", action="store_true", help="also print the label-flicker table")
    parser.add_argument("--cadence", action="store_true", help="also print the classify-every table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    classifier = Classifier.load(args.checkpoint)
    detector = FaceDetector(max_side=args.max_side)
    print(f"source {args.source}; classifier {classifier.source}; detector {detector.backend} max_side "
          f"{args.max_side}; threads {args.threads}; cpus {os.cpu_count()}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.strftime('%Y-%m-%d %H:%M')}")
    speed_table(args, classifier, detector)
    if args.motion:
        motion_table(args, detector)
    if args.smoothing:
        smoothing_table(args, classifier, detector)
    if args.cadence:
        cadence_table(args, classifier, detector)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
