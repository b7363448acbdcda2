#!/usr/bin/env bash
# Create .venv with the pinned CPU environment (Python 3.10, torch 2.3.1, sal-detectron2 0.7.2)
# and install detkd in editable mode. Idempotent: does nothing when .venv is already complete.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STAMP="$VENV/.detkd-bootstrap-ok"

if [ -f "$STAMP" ] && [ "$STAMP" -nt requirements.txt ] && [ "$STAMP" -nt setup.py ]; then
  exit 0
fi

find_python310() {
  # 1. a working python3.10 on PATH (a pyenv shim may exist but refuse to run)
  if command -v python3.10 >/dev/null 2>&1 && python3.10 -c 'import sys' >/dev/null 2>&1; then
    command -v python3.10; return 0
  fi
  # 2. any pyenv-installed 3.10.x
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    local cand
    for cand in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
      if [ -x "$cand/bin/python3.10" ]; then echo "$cand/bin/python3.10"; return 0; fi
    done
  fi
  return 1
}

PY=$(find_python310) || {
  echo "bootstrap: Python 3.10 not found (needed by the sal-detectron2 cp310 wheel)." >&2
  echo "bootstrap: install it, e.g. 'pyenv install 3.10', or put python3.10 on PATH." >&2
  exit 1
}
echo "bootstrap: using $PY"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" - <<'PY'
import sys
try:
    import detectron2._C  # noqa: F401  compiled ops; absent when torch does not match the wheel
except Exception as e:  # pragma: no cover - reported to the user
    sys.exit(f"bootstrap: 'import detectron2._C' failed ({e!r}); detectron2 would silently degrade. "
             "Check that torch==2.3.1 and torchvision==0.18.1 are installed.")
import torch, torchvision, detectron2, detkd
print(f"bootstrap: ok - torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"detectron2 {detectron2.__version__}, detkd {detkd.__version__}")
PY
touch "$STAMP"
