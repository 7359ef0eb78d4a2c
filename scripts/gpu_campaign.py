"""Fine-tune the face-recognition backbone (face_resnet, dlib's public-domain weights) on one large GPU, in minutes.

Two steps, because the GPU machine reaches neither ../shared nor a package registry:

  pack (here, on the CPU): the training and selection faces of one dataset family, exactly as the project's readers
      and protocols define them (fer.data.splits), as their original JPEG bytes. Every JPEG of a dataset shares one
      header, so it is stored once and each file keeps only its scan: the pack is small enough to travel
      (FER2013 train + PublicTest ~40 MB, RAF-DB train ~23 MB) and decodes to the very same pixels.
  run (there): decode, resize to the input size as the readers do (cv2 INTER_LINEAR), keep every face on the GPU as
      uint8, augment on the GPU, and train the jobs of a plan one after another within a time budget. Each job writes
      a checkpoint in the project's format (fer.checkpoint; `run.py evaluate` / `export` read it) and a metrics record.

  python scripts/gpu_campaign.py pack --family rafdb --out gpu_pack
  python scripts/gpu_campaign.py run --pack gpu_pack/rafdb.npz --plan rafdb --out $OUT --budget 420
  python scripts/gpu_campaign.py run --pack gpu_pack/rafdb.npz --plan rafdb --out /tmp/x --dry-run   # CPU check

The recipe (docs/models.md, "Face-pretrained models"): the dlib affines become BatchNorm layers re-parametrised on
training-face statistics (fer.models.face_resnet_init), AdamW with a linear warm-up and cosine decay, the head at a
larger learning rate, bf16 autocast where the device has bf16 units (CUDA, or a CPU with AMX or AVX512-BF16: the
same script also runs a plan's jobs on such a CPU, slowly, for jobs the GPU budget skipped).
"""

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fer import losses  # noqa: E402
from fer.checkpoint import atomic_save, model_spec  # noqa: E402
from fer.device import native_bf16  # noqa: E402
from fer.models import create_model  # noqa: E402

log = logging.getLogger("gpu_campaign")

FAMILIES = {"rafdb": ("rafdb",), "fer": ("fer2013", "ferplus")}  # one pack per family: the datasets share images
STORED = {"rafdb": (100, 3), "fer2013": (48, 1), "ferplus": (48, 1)}  # (size, channels) as the files are stored


# --------------------------------------------------------------------------------------------------- pack (CPU side)
def split_jpeg(data: bytes, path: str) -> tuple[bytes, bytes]:
    """(header up to and including the start-of-scan segment, the scan) of one baseline JPEG file."""
    sos = data.find(b"\xff\xda")
    if sos < 0:
        raise ValueError(f"{path}: no JPEG start-of-scan marker")
    end = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    return data[:end], data[end:]


def pack_family(family: str, out: Path, root=None, max_per_class: int | None = None) -> Path:
    """One pack per family: the images of its datasets' training and selection parts once, a label set per dataset
    (-1 where a face is not in that dataset's protocol, e.g. FER+ 'unknown' rows)."""
    from fer.config import DataConfig
    from fer.data.splits import load_train_val

    protocols = {}
    for dataset in FAMILIES[family]:
        size, channels = STORED[dataset]
        data = DataConfig(dataset=dataset, image_size=size, channels=channels, max_per_class=max_per_class)
        protocols[dataset] = load_train_val(data, 0, root)
    order = {}  # path -> (index, part), in the first dataset's order
    for train, val in protocols.values():
        for name, faces in (("train", train), ("val", val)):
            for path in faces.paths:
                order.setdefault(path, (len(order), name))
    header, scans = None, []
    for path in order:
        head, scan = split_jpeg(Path(path).read_bytes(), path)
        if header is None:
            header = head
        elif head != header:
            raise ValueError(f"{path}: its JPEG header differs from the dataset's first file; cannot pack")
        scans.append(scan)
    arrays = {"header": np.frombuffer(header, np.uint8), "scans": np.frombuffer(b"".join(scans), np.uint8),
              "offsets": np.cumsum([0] + [len(s) for s in scans]), "part": np.array([p for _, p in order.values()]),
              "paths": np.array([Path(p).name.encode() for p in order])}
    meta = {}
    for dataset, (train, val) in protocols.items():
        labels = np.full(len(order), -1, np.int64)
        for faces in (train, val):
            for path, label in zip(faces.paths, faces.labels):
                labels[order[path][0]] = label
        arrays[f"labels_{dataset}"] = labels
        meta[dataset] = {"class_names": list(train.class_names), "names": [train.name, val.name],
                         "excluded": {"train": train.excluded, "val": val.excluded}, "n": [len(train), len(val)]}
    destination = out / f"{family}.npz"
    out.mkdir(parents=True, exist_ok=True)
    np.savez(destination, meta=json.dumps(meta), **arrays)
    log.info("%s: %d faces (%s), %.1f MB -> %s", family, len(order),
             ", ".join(f"{d}: {m['n'][0]} train + {m['n'][1]} val" for d, m in meta.items()),
             destination.stat().st_size / 1e6, destination)
    return destination


# ---------------------------------------------------------------------------------------------- run (GPU side)
def load_pack(path: Path, dataset: str, size: int, limit: int | None = None) -> dict:
    """One dataset's faces from its family's pack, resized to size x size, BGR uint8 (N, size, size, 3) (gray sources
    replicated), per part (train, val)."""
    import cv2

    z = np.load(path)
    meta = json.loads(str(z["meta"]))[dataset]
    header, scans, offsets = z["header"].tobytes(), z["scans"], z["offsets"]
    labels, part = z[f"labels_{dataset}"], z["part"]
    parts = {}
    for name in ("train", "val"):
        index = np.flatnonzero((part == name) & (labels >= 0))
        if limit:
            index = index[:limit]
        faces = np.empty((len(index), size, size, 3), np.uint8)
        for k, i in enumerate(index):
            data = np.frombuffer(header + scans[offsets[i]:offsets[i + 1]].tobytes(), np.uint8)
            image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # gray files come back replicated into B, G, R
            if image is None:
                raise ValueError(f"{path}: face {i} ({z['paths'][i]}) does not decode")
            faces[k] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size
                                  else cv2.INTER_LINEAR)
        parts[name] = (faces, labels[index])
    return {"parts": parts, "class_names": meta["class_names"], "dataset": dataset, "names": meta["names"],
            "excluded": meta["excluded"]}


def to_input(faces_uint8: torch.Tensor) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) float in [-1, 1], the project's normalisation (fer.data.transforms)."""
    return faces_uint8.permute(0, 3, 1, 2).float().mul_(2 / 255).sub_(1).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, generator: torch.Generator, aug: dict) -> torch.Tensor:
    """GPU augmentation of a normalised batch: flip, rotate/scale/shift, colour, gray, low resolution, erase."""
    b, _, s, _ = x.shape
    dev = x.device

    def uniform(low, high, n=b):
        return torch.rand(n, device=dev, generator=generator) * (high - low) + low

    angle = uniform(-aug["rotate"], aug["rotate"]) * math.pi / 180
    zoom = uniform(1 - aug["scale"], 1 + aug["scale"])
    flip = torch.where(torch.rand(b, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-aug["shift"], aug["shift"]) * 2], 1),
                         torch.stack([sin * flip, cos, uniform(-aug["shift"], aug["shift"]) * 2], 1)], 1)
    grid = F.affine_grid(theta, (b, 3, s, s), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # brightness / contrast around each face's mean
    gain = uniform(1 - aug["contrast"], 1 + aug["contrast"]).view(b, 1, 1, 1)
    shift = uniform(-aug["brightness"], aug["brightness"]).view(b, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain + mean + shift
    # gray: the luma of the BGR face in all three channels (FER2013 and many webcams are gray)
    gray = (torch.rand(b, device=dev, generator=generator) < aug["gray"]).view(b, 1, 1, 1)
    luma = (x * torch.tensor([0.114, 0.587, 0.299], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = torch.where(gray, luma.expand_as(x), x)
    # low resolution: down to 24-64 px and back (48 px FER2013, small faces far from the camera)
    low = torch.rand(b, device=dev, generator=generator) < aug["lowres"]
    if low.any():
        small = int(torch.randint(24, 65, (1,), device=dev, generator=generator))
        x_low = F.interpolate(F.interpolate(x[low], size=small, mode="area"), size=s, mode="bilinear", align_corners=False)
        x = x.clone()
        x[low] = x_low
    # erase one rectangle
    erase = torch.rand(b, device=dev, generator=generator) < aug["erase"]
    if erase.any():
        h = (uniform(0.1, 0.4) * s).long()
        w = (uniform(0.1, 0.4) * s).long()
        top = (torch.rand(b, device=dev, generator=generator) * (s - h)).long()
        left = (torch.rand(b, device=dev, generator=generator) * (s - w)).long()
        rows = torch.arange(s, device=dev).view(1, s, 1)
        cols = torch.arange(s, device=dev).view(1, 1, s)
        box = ((rows >= top.view(b, 1, 1)) & (rows < (top + h).view(b, 1, 1)) & (cols >= left.view(b, 1, 1))
               & (cols < (left + w).view(b, 1, 1)) & erase.view(b, 1, 1))
        x = x.masked_fill(box.unsqueeze(1), 0.0)
    return x.clamp_(-1, 1).contiguous(memory_format=torch.channels_last)


def job(dataset: str, loss: str, seed: int, epochs: int, lr: float | None = None, keep: str = "") -> dict:
    """lr None: the best learning rate of this dataset family's seed-0 jobs with the same loss (last-epoch selection
    accuracy); keep: 'last' or 'best' (by selection accuracy) writes a checkpoint, '' only the record."""
    name = f"{dataset}_{loss}_s{seed}" + (f"_lr{lr:g}" if lr else "")
    return {"name": name, "dataset": dataset, "loss": loss, "seed": seed, "epochs": epochs, "lr": lr, "keep": keep}


COSINE, SOFTMAX = "cosine_distance", "softmax"
PLANS = {
    # In priority order: a job runs only if the budget still allows it (estimated from the measured speed so far).
    # rafdb: each loss picks its learning rate on seed 0, then seeds 1 and 2 repeat it (the loss comparison).
    "rafdb": [job("rafdb", COSINE, 0, 30, 1e-3, "last"), job("rafdb", SOFTMAX, 0, 30, 1e-3),
              job("rafdb", COSINE, 0, 30, 3e-4, "last"), job("rafdb", SOFTMAX, 0, 30, 3e-4),
              job("rafdb", COSINE, 1, 30), job("rafdb", SOFTMAX, 1, 30),
              job("rafdb", COSINE, 2, 30), job("rafdb", SOFTMAX, 2, 30)],
    # fer: the two shipped models first, then the loss comparison on FER+ (learning rates given by --lr-cosine/softmax,
    # the rafdb plan's picks, since this plan has no budget for its own sweep).
    "fer": [job("ferplus", COSINE, 0, 15, keep="best"), job("fer2013", COSINE, 0, 15, keep="best"),
            job("ferplus", SOFTMAX, 0, 15), job("ferplus", COSINE, 1, 15), job("ferplus", SOFTMAX, 1, 15),
            job("ferplus", COSINE, 2, 15), job("ferplus", SOFTMAX, 2, 15)],
}
RECIPE = {"size": 112, "batch_size": 128, "head_lr_mult": 1.0, "weight_decay": 0.05, "warmup_epochs": 1,
          "scale": 16.0, "margin": 0.25, "lambda_island": 0.01, "lambda1": 10.0, "label_smoothing": 0.0,
          "aug": {"rotate": 10.0, "scale": 0.1, "shift": 0.08, "contrast": 0.3, "brightness": 0.2, "gray": 0.2,
                  "lowres": 0.2, "erase": 0.25}}


def evaluate(model, faces: torch.Tensor, labels: np.ndarray, class_names, batch: int = 1024) -> dict:
    """Selection metrics of the faces on the device, by the project's own metric code (fer.evaluation.metrics)."""
    from fer.evaluation.metrics import compute_metrics

    model.eval()
    predictions = []
    with torch.no_grad(), torch.autocast(faces.device.type, torch.bfloat16, enabled=native_bf16(faces.device)):
        for i in range(0, len(faces), batch):
            predictions.append(model(to_input(faces[i:i + batch])).argmax(1).cpu())
    metrics = compute_metrics(labels, torch.cat(predictions).numpy(), class_names)
    return {key: metrics[key] for key in ("accuracy", "macro_f1", "balanced_accuracy")}


def run_job(job: dict, data: dict, out: Path, device: torch.device, recipe: dict, max_steps: int | None) -> dict:
    from fer.models.face_resnet_init import init_from_backbone

    torch.manual_seed(job["seed"])
    generator = torch.Generator(device=device).manual_seed(job["seed"])
    train_faces, train_labels = (torch.as_tensor(a).to(device) for a in data["parts"]["train"])
    val_faces, val_labels = torch.as_tensor(data["parts"]["val"][0]).to(device), data["parts"]["val"][1]
    class_names, k = data["class_names"], len(data["class_names"])
    cosine = job["loss"] == "cosine_distance"
    model = create_model("face_resnet", k, head="cosine" if cosine else "linear", in_channels=3)
    calibration = train_faces[torch.randperm(len(train_faces), generator=torch.Generator().manual_seed(0))[:512].to(device)]
    warm = init_from_backbone(model, to_input(calibration).float().cpu())
    model = model.to(device).to(memory_format=torch.channels_last)
    if cosine:
        objective = losses.CosineDistanceLoss(k, model.embedding_dim, scale=recipe["scale"], margin=recipe["margin"],
                                              lambda_island=recipe["lambda_island"], lambda1=recipe["lambda1"]).to(device)
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": job["lr"]},
                                   {"params": head, "lr": job["lr"] * recipe["head_lr_mult"]}],
                                  weight_decay=recipe["weight_decay"])
    steps_per_epoch = max(1, len(train_faces) // recipe["batch_size"])
    total = steps_per_epoch * job["epochs"] if not max_steps else max_steps
    warmup = min(total // 2, steps_per_epoch * recipe["warmup_epochs"])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    history, best, step, started = [], None, 0, time.perf_counter()
    for epoch in range(job["epochs"]):
        model.train()
        if cosine:
            objective.train()
        order = torch.randperm(len(train_faces), device=device, generator=generator)
        seen, loss_sum = 0, 0.0
        for i in range(steps_per_epoch):
            index = order[i * recipe["batch_size"]:(i + 1) * recipe["batch_size"]]
            x = augment(to_input(train_faces[index]), generator, recipe["aug"])
            y = train_labels[index]
            with torch.autocast(device.type, torch.bfloat16, enabled=native_bf16(device)):
                embeddings, outputs = model.forward_both(x)
            if cosine:
                loss = objective(embeddings.float(), outputs.float(), y)
            else:
                loss = F.cross_entropy(outputs.float(), y, label_smoothing=recipe["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += float(loss.detach()) * len(index)
            seen += len(index)
            if max_steps and step >= max_steps:
                break
        metrics = evaluate(model, val_faces, val_labels, class_names)
        metrics.update(epoch=epoch + 1, train_loss=loss_sum / max(1, seen), seconds=time.perf_counter() - started)
        history.append(metrics)
        log.info("%s epoch %d: val %.4f (F1 %.4f) loss %.4f, %.0f s", job["name"], epoch + 1, metrics["accuracy"],
                 metrics["macro_f1"], metrics["train_loss"], metrics["seconds"])
        if job.get("keep") == "best" and (best is None or metrics["accuracy"] > best[0]["accuracy"]):
            best = (metrics, {key: v.detach().cpu().clone() for key, v in model.state_dict().items()})
        if max_steps and step >= max_steps:
            break
    record = {"job": job, "recipe": recipe, "class_names": class_names, "train": data["names"][0],
              "selection": data["names"][1], "n_train": len(train_faces), "n_val": len(val_faces),
              "excluded": data["excluded"], "history": history, "last": history[-1],
              "images_per_second": step * recipe["batch_size"] / history[-1]["seconds"],
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads",
              "precision": "bf16 autocast" if native_bf16(device) else "fp32"}
    if job.get("keep"):
        metrics, state = best if job["keep"] == "best" else (history[-1], model.state_dict())
        record["kept"] = {"which": job["keep"], **metrics}
        spec = model_spec("face_resnet", k, "cosine" if cosine else "linear", 1, recipe["size"],
                          recipe["scale"] if cosine else 1.0, channels=3)
        payload = {"state_dict": {key: v.detach().cpu().half() for key, v in state.items()}, "model_spec": spec,
                   "class_names": class_names, "config": campaign_config(job, recipe), "metrics": metrics,
                   "warm_start": warm}
        atomic_save(payload, out / f"{job['name']}.pt")
    return record


def campaign_config(job: dict, recipe: dict) -> dict:
    """The run as a complete project config (fer.config, every key resolved), so that evaluate, lineage and the cards
    read it like any checkpoint's. The GPU augmentation (augment()) has no config keys of its own: recipe records it."""
    from fer.config import config_from_dict, config_to_dict

    aug = recipe["aug"]
    raw = {"data": {"dataset": job["dataset"], "image_size": recipe["size"], "channels": 3},
           "augment": {"hflip": 0.5, "rotate": aug["rotate"], "shift": aug["shift"], "scale": aug["scale"],
                       "erase": aug["erase"]},
           "model": {"name": "face_resnet", "head": "cosine" if job["loss"] == COSINE else "linear"},
           "loss": {"name": job["loss"], "scale": recipe["scale"], "margin": recipe["margin"],
                    "lambda_island": recipe["lambda_island"], "lambda1": recipe["lambda1"]},
           "train": {"init": "face_resnet_dlib", "epochs": job["epochs"], "batch_size": recipe["batch_size"],
                     "optimizer": "adamw", "lr": job["lr"], "weight_decay": recipe["weight_decay"],
                     "schedule": "cosine", "warmup_epochs": float(recipe["warmup_epochs"]), "seed": job["seed"],
                     "precision": "bf16"}}
    return config_to_dict(config_from_dict(raw, "scripts/gpu_campaign.py"))


def pick_lr(job: dict, records: dict, fixed: dict) -> float:
    if job["lr"]:
        return job["lr"]
    if fixed.get(job["loss"]):
        return fixed[job["loss"]]
    swept = [r for r in records.values() if r["job"]["loss"] == job["loss"] and r["job"]["seed"] == 0
             and r["job"]["dataset"] == job["dataset"]]
    if not swept:
        raise ValueError(f"{job['name']}: no learning rate given and no seed-0 run of its loss to take one from")
    return max(swept, key=lambda r: r["last"]["accuracy"])["job"]["lr"]


def run_plan(args) -> None:
    """Jobs in order within the budget; every record goes into OUT/records.json (rewritten after each job), so what
    finished comes back even when the command is cut short."""
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    records, data, speed = {}, {}, args.speed_guess
    deadline = time.perf_counter() + args.budget
    fixed = {COSINE: args.lr_cosine, SOFTMAX: args.lr_softmax}
    for planned in PLANS[args.plan]:
        job = dict(planned, lr=pick_lr(planned, records, fixed))
        job["name"] = f"{job['dataset']}_{job['loss']}_s{job['seed']}_lr{job['lr']:g}"
        if args.only and job["name"] not in args.only and planned["name"] not in args.only:
            continue
        if job["dataset"] not in data:
            data[job["dataset"]] = load_pack(args.pack, job["dataset"], RECIPE["size"], 64 if args.dry_run else None)
        if args.dry_run:
            job["epochs"] = 1
        estimate = job["epochs"] * (len(data[job["dataset"]]["parts"]["train"][0]) * 1.1) / speed
        if time.perf_counter() + estimate > deadline:
            log.warning("%s: skipped, %.0f s estimated, %.0f s of the budget left", job["name"], estimate,
                        deadline - time.perf_counter())
            continue
        record = run_job(job, data[job["dataset"]], args.out, device, RECIPE, max_steps=2 if args.dry_run else None)
        records[job["name"]] = record
        speed = record["images_per_second"]  # measured: the next estimates use it
        atomic_json(records, args.out / "records.json")


def atomic_json(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write the faces of a dataset family as JPEG scans (CPU, reads the data root)")
    p.add_argument("--family", choices=sorted(FAMILIES), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-per-class", type=int, help="a small real subset (tests, the --dry-run check)")
    r = sub.add_parser("run", help="train a plan's jobs from packs")
    r.add_argument("--pack", type=Path, required=True, help="the family's pack (pack --out DIR writes DIR/<family>.npz)")
    r.add_argument("--plan", choices=sorted(PLANS), required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--only", nargs="*", help="run only these jobs")
    r.add_argument("--budget", type=float, default=480, help="seconds; a job that would not finish in time is skipped")
    r.add_argument("--speed-guess", type=float, default=8000, help="images/s assumed before the first job measures it")
    r.add_argument("--lr-cosine", type=float, help="learning rate of cosine-distance jobs that name none")
    r.add_argument("--lr-softmax", type=float, help="learning rate of softmax jobs that name none")
    r.add_argument("--dry-run", action="store_true", help="CPU, 64 faces per part, 2 steps per job: checks the path")
    args = parser.parse_args()
    if args.command == "pack":
        pack_family(args.family, args.out, args.data_root, args.max_per_class)
    else:
        run_plan(args)


if __name__ == "__main__":
    main()
