#!/usr/bin/env bash
# Install fer-toolkit into the active Python environment (a virtual environment is recommended).
#
# albumentations depends on opencv-python-headless, which installs the same `cv2` module as opencv-python but without
# GUI support. We keep opencv-python (windows for the live view, Haar cascade files for `--detector haar`): remove
# the headless wheel and reinstall the GUI one over the shared `cv2` folder.
set -euo pipefail
extras="${1:-}"   # e.g. "[dev]"
torch_build="${2:-cpu}"   # cpu (default) | cuda: the default PyPI wheel, a CUDA build on Linux (scripts/gpu_check.sh)
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$torch_build" = cuda ]; then
  # Keep a CUDA torch that is already there (a GPU image); otherwise the PyPI wheel, which bundles CUDA on Linux.
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || python -m pip install --quiet torch
elif [ "$torch_build" = cpu ]; then
  # The CPU build of torch: on this project's machines the wheel lies on local disk; elsewhere take it from the CPU
  # index so that pip never pulls a multi-GB CUDA build.
  python -m pip install --quiet "torch==2.13.0" 2>/dev/null \
    || python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
else
  echo "install.sh: torch build must be 'cpu' or 'cuda', got '$torch_build'" >&2
  exit 2
fi
python -m pip install --quiet -e "${here}${extras}"
python -m pip uninstall --quiet -y opencv-python-headless
python -m pip install --quiet --force-reinstall --no-deps "opencv-python>=4.10,<5"
python - <<'PY'
import cv2, os, re
gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation()).group(1)
cascade = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
assert gui != "NONE" and os.path.exists(cascade), f"cv2 {cv2.__version__}: GUI={gui}, cascades={os.path.exists(cascade)}"
print(f"fer-toolkit installed: cv2 {cv2.__version__} (GUI {gui}, Haar cascades present)")
PY
