#!/usr/bin/env bash
# GPU check on a fresh machine with a CUDA GPU, in under 8 minutes including the install:
#   1. a virtual environment with the project and a CUDA build of torch (scripts/install.sh "[dev]" cuda),
#   2. the `cuda` tests (tests/test_cuda.py),
#   3. a short bf16 training run of the stronger model (resnet_small) on FER2013, evaluated on PrivateTest,
#   4. the throughput benchmark: fp32 vs bf16 images/s per model and batch size on the GPU.
# Everything goes into one folder: summary.txt, log.txt, nvidia-smi.txt, cuda_tests.txt, train/ (run files, report),
# throughput.txt.
#
#   bash scripts/gpu_check.sh [OUT_DIR] [--dry-run]      (OUT_DIR default: $OUT, else runs/gpu_check)
#
# Data root: $FER_DATA, else ../shared/data beside the repository. --dry-run checks the script on a CPU machine in the
# active environment: no install, the cuda tests (they skip), a few bf16 steps on the CPU, a tiny benchmark.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dry_run=0
out_arg=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; exit 2 ;;
    *) out_arg="$arg" ;;
  esac
done
out="$(mkdir -p "${out_arg:-${OUT:-runs/gpu_check}}" && cd "${out_arg:-${OUT:-runs/gpu_check}}" && pwd)"
export FER_DATA="${FER_DATA:-$(cd "$here/.." && pwd)/shared/data}"
export FER_OFFLINE=1 GOMP_SPINCOUNT=10000 PYTHONUNBUFFERED=1
[ -d "$FER_DATA/fer2013/train" ] || { echo "gpu_check.sh: no FER2013 at $FER_DATA (set FER_DATA)" >&2; exit 2; }
exec > >(tee -a "$out/log.txt") 2>&1
started=$SECONDS
step() { echo "[gpu_check +$((SECONDS - started)) s] $*" | tee -a "$out/summary.txt"; }
cd "$here"

step "install (dry run: $dry_run)"
if [ "$dry_run" = 0 ]; then
  # --system-site-packages: a GPU image's preinstalled CUDA torch is reused instead of downloaded again.
  if python3 -m venv --system-site-packages .gpu-venv; then
    . .gpu-venv/bin/activate
  else
    echo "gpu_check.sh: no venv module here; installing into $(command -v python3)"
    python() { python3 "$@"; }
    export -f python
  fi
  bash scripts/install.sh "[dev]" cuda
  device=cuda
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
else
  device=cpu
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())" \
  | tee -a "$out/summary.txt"
if [ "$dry_run" = 0 ]; then
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
fi

step "cuda tests"
set +e
python -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider > "$out/cuda_tests.txt" 2>&1
tests_rc=$?
set -e
tail -n 3 "$out/cuda_tests.txt" | tee -a "$out/summary.txt"

step "bf16 training, resnet_small on FER2013"
if [ "$dry_run" = 0 ]; then
  # 4 epochs of the full 28,709 training images: the short run the time budget allows; threads 0 = all cores for the
  # in-process augmentation, which feeds the GPU.
  run_settings=(--set train.epochs=4 --set train.threads=0)
else
  run_settings=(--set data.max_per_class=20 --set train.max_steps=4 --set train.threads=2)
fi
set +e
timeout 300 python run.py train --config configs/fer2013_resnet_cosine.yaml --no-progress \
  --set train.device="$device" --set train.precision=bf16 --set train.out_dir="$out/train" "${run_settings[@]}" \
  > "$out/train.txt" 2>&1
train_rc=$?
set -e
grep -E "epoch [0-9]+:|best validation|accuracy|error" "$out/train.txt" | tail -n 12 | tee -a "$out/summary.txt" || true

step "throughput benchmark"
if [ "$dry_run" = 0 ]; then
  bench=(--device cuda --precisions fp32 bf16 --batch-sizes 64 256 --models mini_xception resnet_small resnet_medium --steps 20)
else
  bench=(--device cpu --precisions fp32 bf16 --batch-sizes 16 --models mini_xception --steps 2 --processes 1 2)
fi
set +e
timeout 150 python benchmarks/train_throughput.py "${bench[@]}" > "$out/throughput.txt" 2>&1
bench_rc=$?
set -e
cat "$out/throughput.txt" >> "$out/summary.txt"

step "done: cuda tests rc=$tests_rc, training rc=$train_rc, benchmark rc=$bench_rc; files in $out"
[ "$tests_rc" = 0 ] && [ "$train_rc" = 0 ] && [ "$bench_rc" = 0 ]
