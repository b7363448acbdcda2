#!/usr/bin/env bash
# Gather, on this (CPU) machine, what the GPU check needs on a machine without network, into the
# ignored folder .device/ (under 64 MiB with the working tree):
#   .device/detectron2.tar.gz   detectron2's source at DETECTRON2_COMMIT
#   .device/wheels/*.whl        cp312 / pure-Python wheels of what detectron2 and detkd import
#                               that the GPU machine's Python 3.12 lacks (fvcore, iopath, yacs,
#                               pycocotools, omegaconf, hydra-core, antlr4, termcolor)
# Usage: scripts/device_prep.sh DETECTRON2_GIT_DIR   (a clone or bare mirror of
#        facebookresearch/detectron2 that holds DETECTRON2_COMMIT)
# Then on the GPU machine, from the repository root: bash scripts/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DETECTRON2_COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
GIT_DIR_IN=${1:?usage: scripts/device_prep.sh DETECTRON2_GIT_DIR}
PY=${PY:-.venv/bin/python}
OUT=.device
mkdir -p "$OUT/wheels"
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude

git --git-dir "$(git -C "$GIT_DIR_IN" rev-parse --absolute-git-dir)" \
  archive --format=tar.gz --prefix=detectron2/ -o "$OUT/detectron2.tar.gz" "$DETECTRON2_COMMIT"
echo "$DETECTRON2_COMMIT" > "$OUT/DETECTRON2_COMMIT"

# wheels published for any Python, or for cp312 on manylinux x86-64
for spec in iopath==0.1.9 yacs==0.1.8 omegaconf==2.3.0 hydra-core==1.3.2 termcolor==2.4.0 \
    pycocotools==2.0.8; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$OUT/wheels" "$spec"
done
# published as source only, pure Python: built into py3 wheels here
for spec in fvcore==0.1.5.post20221221 antlr4-python3-runtime==4.9.3; do
  "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$OUT/wheels" "$spec"
done
ls -1 "$OUT/wheels"
du -sh "$OUT"
