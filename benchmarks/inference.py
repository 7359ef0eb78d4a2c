"""Inference speed side by side: every shipped model x backend, the OpenCV Zoo FER peer, and live frames/s.

    python benchmarks/inference.py                               # the docs/speed.md table (idle cores, a few minutes)
    python benchmarks/inference.py --repeats 20 --batch-repeats 2 --live-frames 30    # a smoke run
    python benchmarks/inference.py --models fer2013 runs/x/best.pt --architectures mini_xception resnet_small

Per model and backend: median ms per face at batch 1 (one predict call with one aligned face) and faces/s at batch 64
(median over calls), on real FER2013 test faces; torch, OpenCV and onnxruntime all get --threads threads.
--architectures adds rows for untrained models of those architectures (speed does not depend on the weights), so the
speed of a mini-Xception-sized model is measured even while no mini-Xception is shipped.
The peer is the OpenCV Zoo MobileFaceNet int8 model (shared/models/peers, benchmark-only, loaded by path here and never
by fer): RGB 112 x 112 input, (x / 255 - 0.5) / 0.5, run in cv2.dnn (the zoo's runtime) and onnxruntime.
Live: run_live on the shared clip, headless, JSONL only, the default model, detecting every frame and every 2nd frame.
"""

import argparse
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

from benchmarks.timing import timed  # noqa: E402
from fer.backends import BACKENDS, OnnxRuntimeClassifier, OpenCVClassifier, load_classifier  # noqa: E402
from fer.checkpoint import DEFAULT_NAME, model_spec, shipped_models  # noqa: E402
from fer.export import onnx_bytes, read_onnx  # noqa: E402
from fer.face.detect import FaceDetector  # noqa: E402
from fer.inference import Classifier  # noqa: E402
from fer.labels import FER2013_CLASSES  # noqa: E402
from fer.live import run_live  # noqa: E402
from fer.models import MIN_INPUT_SIZE, MODELS, create_model  # noqa: E402

SHARED = Path(os.environ.get("FER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = Path(os.environ.get("FER_DATA", SHARED / "data"))
CLIP = SHARED / "media" / "short_hamilton_clip.mp4"
PEER = SHARED / "models" / "peers" / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx"


def real_faces(n: int = 64) -> np.ndarray:
    """n FER2013 test faces, taken round-robin over the class folders: uint8 (n, 48, 48)."""
    folders = sorted(p for p in (DATA / "fer2013" / "test").iterdir() if p.is_dir())
    paths = [sorted(f.glob("*.jpg"))[i] for i in range(n) for f in folders][:n]
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])


def row(name: str, backend: str, one, batch, repeats: int, batch_repeats: int) -> str:
    ms = 1000 * timed(one, repeats)
    per_s = 64 / timed(batch, batch_repeats)
    return f"| {name} | {backend} | {ms:.3f} | {per_s:,.0f} |"


def untrained_classifier(architecture: str, backend: str, threads: int):
    """An untrained cosine-head model of one architecture behind the given backend (for speed only)."""
    size = MIN_INPUT_SIZE.get(architecture, 48)  # face_resnet takes >= 112 px faces
    model = create_model(architecture, len(FER2013_CLASSES), head="cosine").eval()
    spec = model_spec(architecture, len(FER2013_CLASSES), "cosine", 1, size, 10.0)
    if backend == "torch":
        return Classifier(model, FER2013_CLASSES, size, 10.0)
    data = onnx_bytes(model, spec, FER2013_CLASSES)
    if backend == "onnxruntime":
        return OnnxRuntimeClassifier(data, read_onnx(data, architecture), num_threads=threads)
    return OpenCVClassifier(data, read_onnx(data, architecture))


def peer_rows(faces: np.ndarray, args) -> list[str]:
    if not PEER.is_file():
        return [f"| OpenCV Zoo MobileFaceNet int8 (peer) | - | not found: {PEER} | |"]
    bgr = np.stack([cv2.cvtColor(cv2.resize(f, (112, 112)), cv2.COLOR_GRAY2BGR) for f in faces])  # (64, 112, 112, 3)

    def blob(images):  # the zoo's preprocessing: RGB, x / 255, (x - 0.5) / 0.5, NCHW
        return cv2.dnn.blobFromImages(images, 1.0 / 255, (112, 112), swapRB=True) * 2 - 1

    rows = []
    net = cv2.dnn.readNet(str(PEER))
    one_blob, batch_blob = blob(bgr[:1]), blob(bgr)

    def cv_run(x):
        net.setInput(x)
        return net.forward()
    # Its int8 Add has a batch-1 constant that cv2.dnn cannot broadcast over a batch: 64 single calls there.
    cv_batch = lambda: [cv_run(one_blob) for _ in range(64)]  # noqa: E731
    rows.append(row("OpenCV Zoo MobileFaceNet int8 (peer; batch 64 = 64 calls)", "opencv", lambda: cv_run(one_blob),
                    cv_batch, args.repeats, args.batch_repeats))
    try:
        import onnxruntime
    except ImportError:
        return rows
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(str(PEER), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    ort_one = lambda: session.run(None, {name: one_blob})  # noqa: E731
    try:
        session.run(None, {name: batch_blob})
        ort_batch = lambda: session.run(None, {name: batch_blob})  # noqa: E731
    except Exception:  # onnxruntime raises its own error types for a fixed batch axis
        ort_batch = lambda: [ort_one() for _ in range(64)]  # noqa: E731
    rows.append(row("OpenCV Zoo MobileFaceNet int8 (peer)", "onnxruntime", ort_one, ort_batch, args.repeats,
                    args.batch_repeats))
    return rows


def fit_faces(faces: np.ndarray, classifier) -> np.ndarray:
    """The 48 px gray test faces at the model's input size, as BGR where it takes colour (speed only: same pixels)."""
    size = classifier.input_size
    if size != faces.shape[1]:
        faces = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in faces])
    if classifier.channels == 3:
        faces = np.stack([cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in faces])
    return faces


def live_rows(args) -> list[str]:
    rows = []
    detector = FaceDetector(max_side=480)  # as `run.py live`
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            classifier = load_classifier(DEFAULT_NAME, backend, num_threads=args.threads)
            run_live(str(CLIP), classifier, detector, display=False, max_frames=10, num_threads=args.threads)  # warm-up
            for k in (1, 2):
                summary = run_live(str(CLIP), classifier, detector, display=False, detect_every=k,
                                   jsonl=Path(tmp) / "frames.jsonl", max_frames=args.live_frames, num_threads=args.threads)
                rows.append(f"| live, {DEFAULT_NAME}, {backend}, detect every {k} | {summary['mean_fps']:.1f} frames/s | "
                            f"{summary['frames']} frames, {summary['faces']} faces, classify "
                            f"{summary['stage_ms']['classify']:.2f} ms/frame, detect {summary['stage_ms']['detect']:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300, help="batch-1 calls per model and backend")
    parser.add_argument("--batch-repeats", type=int, default=30, help="batch-64 calls per model and backend")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, OpenCV and onnxruntime")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--models", nargs="+", default=shipped_models(), help="shipped names or checkpoint paths")
    parser.add_argument("--architectures", nargs="*", default=["mini_xception"], choices=MODELS,
                        help="also time untrained models of these architectures (default mini_xception)")
    parser.add_argument("--live-frames", type=int, default=None, help="frames of the clip per live run (default all)")
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    faces = real_faces(64)
    print(f"threads {args.threads}; cpus {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("| model | backend | ms per face, batch 1 | faces/s, batch 64 |\n| --- | --- | ---: | ---: |")
    for name in args.models:
        for backend in args.backends:
            classifier = load_classifier(name, backend, num_threads=args.threads)
            sized = fit_faces(faces, classifier)
            print(row(name, backend, lambda: classifier.predict(sized[:1]), lambda: classifier.predict(sized),
                      args.repeats, args.batch_repeats), flush=True)
    for architecture in args.architectures:
        for backend in args.backends:
            classifier = untrained_classifier(architecture, backend, args.threads)
            size = classifier.input_size
            sized = fit_faces(faces, classifier)
            print(row(f"{architecture} (untrained, speed only{'' if size == 48 else f', {size} px'})", backend,
                      lambda: classifier.predict(sized[:1]), lambda: classifier.predict(sized), args.repeats,
                      args.batch_repeats), flush=True)
    for line in peer_rows(faces, args):
        print(line, flush=True)
    if not args.no_live:
        print("\n| live run | speed | details |\n| --- | ---: | --- |")
        for line in live_rows(args):
            print(line, flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
