#!/usr/bin/env bash
# The GPU benchmark in one command: install what benchmarks/gpu_workload.py needs beside the
# machine's own CUDA torch (never replacing it), then run it.
#
#   bash benchmarks/setup_gpu.sh [gpu_workload.py options]   # e.g. --json gpu.json
#   bash benchmarks/setup_gpu.sh --download [DIR]            # with network: wheels for an offline machine
#
# What it installs, all with --no-deps into a private folder ($SITE, default .gpu-site/ in the
# repository, git-ignored), put first on PYTHONPATH for the run; the machine's site-packages
# are not touched, so its torch stays what it is:
#   spikingjelly==2.0.0 snntorch==1.0.0 norse==1.1.0   the peers (their metadata pulls
#                         torchvision, torchaudio, tensorboard... which their neurons never import)
#   loguru (SpikingJelly's import), nir nirtorch (Norse's imports)
#   h5py, numpy, triton   only those the machine lacks (triton at the version torch pins)
# No CuPy: SpikingJelly 2.0's LIFNode runs its Triton kernels on CUDA (the old
# backend='cupy' is gone; its native CUDA ops are not in the PyPI wheel).
# spikeforge is not installed: src/ goes on PYTHONPATH, so the working tree is what runs.
#
# Sources: $WHEELS if set, else .whl/ in the repository if it exists (made by --download;
# then pip never reaches the network: --no-index --only-binary), else the package index.
# Norse 1.1.0 is an sdist on PyPI; --download builds its (pure-Python) wheel.
#
# Environment: PYTHON (default python3: the interpreter with CUDA torch), SITE, WHEELS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
SITE="${SITE:-$ROOT/.gpu-site}"
PEERS=(spikingjelly==2.0.0 snntorch==1.0.0 norse==1.1.0 loguru==0.7.3 nir==1.0.8 nirtorch==2.6)

if [[ "${1:-}" == "--download" ]]; then
    DIR="${2:-$ROOT/.whl}"
    mkdir -p "$DIR"
    # pure-Python wheels: any Python 3 / platform; norse is built from its sdist
    WHL=()
    for p in "${PEERS[@]}"; do [[ "$p" == norse==* ]] || WHL+=("$p"); done
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DIR" "${WHL[@]}"
    "$PY" -m pip wheel -q --no-deps -w "$DIR" norse==1.1.0
    rm -f "$DIR"/norse-*.tar.gz
    ls "$DIR"
    exit 0
fi

"$PY" -c "import torch" || { echo "setup_gpu: $PY has no torch; set PYTHON to the interpreter with CUDA torch" >&2; exit 1; }
TORCH_BEFORE="$("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
echo "setup_gpu: $PY, torch $TORCH_BEFORE (kept as it is)"

# the imports the machine lacks (checked without $SITE on the path)
EXTRA=()
for m in h5py numpy; do
    "$PY" -c "import $m" 2>/dev/null || EXTRA+=("$m")
done
if ! "$PY" -c "import triton" 2>/dev/null; then
    # the triton that this torch was built against, from its metadata (e.g. triton==3.6.0)
    EXTRA+=("$("$PY" - <<'EOF'
import importlib.metadata as md
req = [r.split(";")[0].replace(" ", "") for r in (md.requires("torch") or []) if r.startswith("triton")]
print(req[0] if req else "triton")
EOF
)")
fi

SRC=()
WHEELS="${WHEELS:-}"
[[ -z "$WHEELS" && -d "$ROOT/.whl" ]] && WHEELS="$ROOT/.whl"
[[ -n "$WHEELS" ]] && SRC=(--no-index --only-binary=:all: --find-links "$WHEELS")

export PYTHONPATH="$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if "$PY" - "${PEERS[@]:0:3}" <<'EOF' 2>/dev/null; then
import importlib.metadata as md, sys
import spikingjelly.activation_based, snntorch, norse.torch  # noqa: F401
sys.exit(any(md.version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
EOF
    echo "setup_gpu: peers already in $SITE"
else
    echo "setup_gpu: installing into $SITE: ${PEERS[*]} ${EXTRA[*]-}${WHEELS:+ (from $WHEELS, offline)}"
    mkdir -p "$SITE"
    "$PY" -m pip install -q --no-deps --no-compile --upgrade --target "$SITE" \
        ${SRC[@]+"${SRC[@]}"} "${PEERS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
fi

"$PY" - "$TORCH_BEFORE" <<'EOF'
import importlib.metadata as md, sys
import torch
import spikingjelly.activation_based, snntorch, norse.torch, spikeforge  # noqa: F401
now = f"{torch.__version__} {torch.version.cuda}"
assert now == sys.argv[1], f"torch changed: {sys.argv[1]} -> {now}"
print("setup_gpu:", ", ".join(f"{p} {md.version(p)}" for p in ("spikingjelly", "snntorch", "norse", "triton")),
      f"| spikeforge from {spikeforge.__file__} | CUDA available: {torch.cuda.is_available()}")
EOF

exec "$PY" "$ROOT/benchmarks/gpu_workload.py" "$@"
