#!/usr/bin/env bash
# Create (or reuse) the isolated environment for the iterative reference solver Pty-chi.
#
# Pty-chi needs its own torch/torchvision build, which must not disturb the project's .venv, so it
# lives in benchmarks/.venv-ptychi (git-ignored). The benchmark harness runs
# benchmarks/ptychi_runner.py with this environment's interpreter as a subprocess.
#
# Idempotent: a complete environment (marker file present and `import ptychi, torchvision` works)
# is left as it is. Set PTYCHI_FORCE=1 to rebuild. PYTHON selects the base interpreter.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${PTYCHI_VENV:-$HERE/.venv-ptychi}"
PYTHON="${PYTHON:-python3}"
MARKER="$VENV/.ptychi-installed"
TORCH_SPEC="${PTYCHI_TORCH_SPEC:-torch==2.14.1}"
TORCHVISION_SPEC="${PTYCHI_TORCHVISION_SPEC:-torchvision==0.29.1}"

if [[ "${PTYCHI_FORCE:-0}" != "1" && -f "$MARKER" ]] \
   && "$VENV/bin/python" -c "import ptychi, torchvision" >/dev/null 2>&1; then
    echo "ptychi environment ready: $VENV"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install --quiet --upgrade pip
echo "installing $TORCH_SPEC $TORCHVISION_SPEC (large download, may take a while)"
"${PIP[@]}" install --quiet "$TORCH_SPEC" "$TORCHVISION_SPEC"
echo "installing ptychi and its numerical dependencies"
"${PIP[@]}" install --quiet ptychi numpy scipy scikit-image h5py
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import ptychi, torch, torchvision  # noqa: F401  (import check)
print("ptychi", md.version("ptychi"), "torch", torch.__version__, "torchvision", torchvision.__version__)
PY
touch "$MARKER"
echo "ptychi environment ready: $VENV"
