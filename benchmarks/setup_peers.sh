#!/usr/bin/env bash
# Build .venv-peers: spikeforge (editable) beside SpikingJelly, snnTorch and Norse, one torch.
# Run from anywhere; the venv lands in the repository root (git-ignored by .venv-*/).
#
# torch: 2.14.1, which pip takes from this machine's disk (/etc/xdg/pip caps torch at 2.14.1).
# It is the CUDA build (the venv is ~5.5 GB, all from local wheels); it runs on the CPU here.
# On a machine without that wheel, TORCH=torch==2.13.0 (the CPU build on disk) works too:
# every peer accepts it (spikingjelly needs >=2.6, norse >=2.0, snntorch names no torch).
#
# The peers go in with --no-deps: their declared dependencies drag in torchvision and
# torchaudio (spikingjelly, norse), tensorboard, matplotlib, scipy, SciencePlots... none of
# which the neuron layers import. What they do import is installed explicitly:
#   spikingjelly.activation_based -> loguru;  norse.torch -> nir, nirtorch (nir -> h5py).
# pip's closing "requires torchvision/torchaudio/tensorboard/tqdm, which is not installed"
# warnings are expected.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-peers}"
TORCH="${TORCH:-torch==2.14.1}"

python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q "$TORCH" numpy psutil
$PIP install -q --no-deps spikingjelly==2.0.0 snntorch==1.0.0 norse==1.1.0
$PIP install -q loguru nir nirtorch h5py
$PIP install -q --no-deps -e "$ROOT"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
import spikingjelly.activation_based.neuron, snntorch, norse.torch, spikeforge  # noqa: F401
print(", ".join(f"{p} {md.version(p)}" for p in ("torch", "spikingjelly", "snntorch", "norse", "spikeforge")))
EOF
