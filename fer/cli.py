"""Command-line interface: subcommands -> load config -> one call into fer. No logic beyond argument plumbing."""

import argparse
import json
import logging
import os
import sys

from fer.config import ConfigError


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
    logging.getLogger("fer").info("best validation accuracy %.4f after %d epochs, %.0f s of training; best checkpoint %s",
                                  result["best_val_acc"], result["epochs"], result["seconds"], result["best"])
    if args.no_eval:
        return 0
    from fer.evaluate import evaluate_after_training

    evaluate_after_training(cfg, result["best"], data_root=args.data_root)
    return 0


def add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset split: metrics, confusion matrix, report files")
    p.add_argument("--checkpoint", help="shipped model name or checkpoint path (default: the shipped model)")
    p.add_argument("--dataset", default="fer2013", choices=("fer2013", "fer2013-csv", "ferplus", "rafdb", "folder"))
    p.add_argument("--data", help="where this dataset lives (default: its folder under the data root)")
    p.add_argument("--data-root", help="data root (default: env FER_DATA, else ./data)")
    p.add_argument("--split", help="split to evaluate (default: the test split: private for fer2013/ferplus, test for "
                   "rafdb/folder; a folder without split sub-folders is read whole)")
    p.add_argument("--tta", default="none", choices=("none", "flip", "tencrop"), help="test-time augmentation")
    p.add_argument("--dedup-clean", action="store_true", help="drop test images with a byte-identical copy in train")
    p.add_argument("--class-map", help="dataset_class=model_class pairs, e.g. anger=angry,sadness=sad")
    p.add_argument("--exclude-classes", help="dataset classes to leave out (counted), e.g. contempt")
    p.add_argument("--allow-skipped", action="store_true", help="report even if samples of the split could not be read")
    p.add_argument("--detect-faces", action="store_true", help="raw photos in class folders: detect and align faces first")
    p.add_argument("--projection", default="pca", choices=("pca", "tsne"), help="embeddings.png projection")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default="runs/eval", help="report folder (report.json, report.md, confusion.png, embeddings.png)")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from fer.config import DataConfig
    from fer.evaluate import evaluate, format_summary, parse_class_map, parse_names

    data_cfg = DataConfig(dataset=args.dataset, path=args.data, class_map=parse_class_map(args.class_map))
    report = evaluate(args.checkpoint, data_cfg, args.split, args.out, data_root=args.data_root, tta_mode=args.tta,
                      dedup_clean=args.dedup_clean, exclude_classes=parse_names(args.exclude_classes),
                      allow_skipped=args.allow_skipped, detect_faces=args.detect_faces, batch_size=args.batch_size,
                      projection=args.projection)
    print(format_summary(report))
    print(f"report: {args.out}/report.json, report.md, confusion.png, embeddings.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer", description="Facial expression recognition: preprocess, train, evaluate, "
                                     "predict and live classification.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_train, add_evaluate):
        add(sub)
    return parser


def main(argv=None) -> int:
    # OpenMP threads that sleep instead of spinning while waiting: training ran 4x faster here when another process
    # shared the CPU (benchmarks/train_throughput.py). Must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
