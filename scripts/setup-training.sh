#!/usr/bin/env bash
# Creates (or checks) the training environment .venv-training at the repository root with the
# pinned packages of training/requirements.txt. Idempotent: with nothing changed it only
# compares a stamp and exits.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-training"
REQ="$ROOT/training/requirements.txt"
STAMP="$VENV/.needle_nav_requirements.sha256"
PY=${PYTHON:-python3}

want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-training: creating $VENV"
    "$PY" -m venv "$VENV"
fi
echo "setup-training: installing training/requirements.txt (torch is large; first time takes minutes)"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q -r "$REQ"
"$VENV/bin/python" - <<'PY'
import torch, onnx, onnxruntime, numpy, scipy, nibabel, matplotlib, pydicom, pytest  # noqa: F401
import pylibjpeg, openjpeg  # noqa: F401  (JPEG 2000 DICOM)
print(f"setup-training: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}")
PY
echo "$want" > "$STAMP"
