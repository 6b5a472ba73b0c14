#!/usr/bin/env bash
# Create .venv and install HybridMedNet into it.
#   bash scripts/setup.sh        runtime (train / evaluate / predict / DICOM / NIfTI / ONNX / clinical text)
#   bash scripts/setup.sh dev    the same plus the test tools
# torch is installed first: on a machine without an NVIDIA GPU, `torch==2.13.0` resolves to the
# CPU wheel and constraints-cpu.txt pins torch/torchvision so pip never pulls CUDA packages.
# PyPI's torchvision is a CUDA build; hybridmednet makes it importable next to a CPU torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-}
python3 -m venv .venv
py=.venv/bin/python
pip_install() { "$py" -m pip install --quiet --disable-pip-version-check "$@"; }
if ! "$py" -c "import torch" 2>/dev/null; then
  pip_install "torch==2.13.0"
fi
constraints=()
if "$py" -c "import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)"; then
  constraints=(-c constraints-cpu.txt)
fi
if [ "$extra" = "dev" ]; then
  pip_install -e ".[dev]" "${constraints[@]}"
else
  pip_install -e ".[medical,deploy,report,pretrained,text,serve,tune,volumes]" "${constraints[@]}"
fi
if [ ${#constraints[@]} -gt 0 ]; then
  # CPU torch beside PyPI's CUDA torchvision: a start-up hook makes `import timm` / `import torchvision`
  # work in any script or notebook of this venv, even before (or without) `import hybridmednet`.
  site=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo 'import importlib.util, importlib; importlib.util.find_spec("hybridmednet") and importlib.import_module("hybridmednet._compat.torchvision").prepare_torchvision()' \
    > "$site/hybridmednet-torchvision-compat.pth"
fi
"$py" -c "import timm, torchvision, torch, hybridmednet; print('hybridmednet', hybridmednet.__version__, '| torch', torch.__version__, '| timm', timm.__version__)"
