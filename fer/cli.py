"""Command-line interface: subcommands -> load config -> one call into fer. No logic beyond argument plumbing."""

import argparse
import json
import logging
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer", description="Facial expression recognition: preprocess, train, evaluate, "
                                     "predict and live classification.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_train,):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
