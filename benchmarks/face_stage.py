"""Milliseconds per 640x480 frame for face detection and alignment, per backend (yunet, haar).

Frames: every photo of shared/media and every 10th frame of short_hamilton_clip.mp4, resized to 640x480 (so no
detector downscaling happens). Each frame is timed --repeats times; we report the median over frames of the
per-frame median, and the 90th percentile. Alignment is timed per face (align_face to 48x48 gray).

Run: python benchmarks/face_stage.py [--repeats 5] [--threads 1]
Shared media is read in place from $FER_SHARED or <repo>/../shared.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer.face import FaceDetector, align_face  # noqa: E402

SHARED = Path(os.environ.get("FER_SHARED", REPO.parent / "shared"))
FRAME = (640, 480)


def load_frames(media: Path, video_step: int = 10) -> list[np.ndarray]:
    frames = []
    for path in sorted(media.iterdir()):
        if path.suffix.lower() in (".jpg", ".png"):
            frames.append(cv2.resize(cv2.imread(str(path)), FRAME, interpolation=cv2.INTER_AREA))
    video = cv2.VideoCapture(str(media / "short_hamilton_clip.mp4"))
    index = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        if index % video_step == 0:
            frames.append(cv2.resize(frame, FRAME, interpolation=cv2.INTER_LINEAR))
        index += 1
    video.release()
    return frames


def time_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (0 = OpenCV's default)")
    args = parser.parse_args()
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    try:
        import torch
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = "n/a"
    frames = load_frames(SHARED / "media")
    print(f"{len(frames)} frames of 640x480; cv2 {cv2.__version__} threads {cv2.getNumThreads()}, "
          f"torch threads {torch_threads} (unused here), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, repeats {args.repeats}")
    backends = {
        "yunet": FaceDetector("yunet", model_path=SHARED / "models/face_detection_yunet_2023mar.onnx"),
        "haar": FaceDetector("haar"),
    }
    print(f"{'backend':8s} {'detect ms median':>16s} {'p90':>7s} {'faces':>6s} {'align ms/face median':>21s} {'p90':>6s}")
    for name, detector in backends.items():
        detector.detect(frames[0])  # warm-up (first call sets the input size)
        detect_ms, align_ms, n_faces = [], [], 0
        for frame in frames:
            detect_ms.append(time_ms(lambda: detector.detect(frame), args.repeats))
            faces = detector.detect(frame)
            n_faces += len(faces)
            for face in faces:
                align_ms.append(time_ms(lambda: align_face(frame, face, 48), args.repeats))
        print(f"{name:8s} {np.median(detect_ms):16.2f} {np.percentile(detect_ms, 90):7.2f} {n_faces:6d} "
              f"{np.median(align_ms):21.3f} {np.percentile(align_ms, 90):6.3f}")


if __name__ == "__main__":
    main()
