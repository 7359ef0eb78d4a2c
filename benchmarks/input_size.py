"""Training cost of input size and colour: seconds per optimizer step for each (image_size, channels) variant.

    python benchmarks/input_size.py --config configs/rafdb_resnet_cosine.yaml --variants 48x1 100x3 [--steps 50]

Each variant is a real `fer.train.train` run of --steps steps on the config's dataset with `data.image_size` and
`data.channels` overridden (reading, augmentation, forward, loss, backward, optimizer step); the time is the trainer's
own loop time (data reading excluded), so the first steps' warm-up is included. Prints seconds per step and the ratio to
the first variant. Runs go to a temporary folder outside the work tree. Accuracy needs full trainings: use
`run.py train --config ... --set data.channels=3 --set data.image_size=100` for those
(docs/training-and-configs.md, "Input size and colour").
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer.config import load_config  # noqa: E402
from fer.train import train  # noqa: E402


def variant(text: str) -> tuple[int, int]:
    size, _, channels = text.partition("x")
    if not (size.isdigit() and channels.isdigit()):
        raise argparse.ArgumentTypeError(f"expected SIZExCHANNELS such as 48x1 or 100x3, got {text!r}")
    return int(size), int(channels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/rafdb_resnet_cosine.yaml")
    parser.add_argument("--variants", type=variant, nargs="+", default=[(48, 1), (100, 3)])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-per-class", type=int, default=None, help="read a subset (faster start, same step cost)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_input_size_") as root:
        for size, channels in args.variants:
            overrides = [f"data.image_size={size}", f"data.channels={channels}", f"train.max_steps={args.steps}",
                         f"train.threads={args.threads}", f"train.out_dir={root}/{size}x{channels}",
                         f"train.checkpoint_every={args.steps + 1}"]
            if args.max_per_class:
                overrides.append(f"data.max_per_class={args.max_per_class}")
            cfg = load_config(args.config, overrides)
            result = train(cfg, progress=False)
            rows.append((size, channels, result["steps"], result["seconds"] / max(result["steps"], 1)))
    print(f"{args.config}, {args.steps} steps of batch {cfg.train.batch_size}, {args.threads} thread(s)")
    print("size  channels  steps  s/step  ratio")
    for size, channels, steps, per_step in rows:
        print(f"{size:4}  {channels:8}  {steps:5}  {per_step:6.3f}  {per_step / rows[0][3]:5.2f}")


if __name__ == "__main__":
    main()
