#!/usr/bin/env bash
# The GPU check, in one call of the GPU machine (Python 3.12, a current torch with CUDA, numpy 2,
# no network, no detectron2), from the repository root, after scripts/device_prep.sh gathered
# .device/ here (the call carries it: carry [".device"]):
#   1. installs the carried wheels, builds detectron2's _C for this GPU only
#      (TORCH_CUDA_ARCH_LIST from the GPU, every core), puts detkd on the path;
#   2. runs the CUDA tests (tests/test_cuda.py: every method and `all` in fp32, fp16, bf16; float32
#      statistics; export; an nccl process group) and the whole suite on this stack;
#   3. the GPU figures: benchmarks/bench_distill.py with and without AMP, and the shipped COCO
#      configs' step time at 800x1333 (benchmarks/bench_coco_step.py).
# Everything is written under $OUT (logs, and the tables for BENCHMARKS.md).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/detkd-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
log() { echo "[device_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/steps.log"; }

log "GPU: $(nvidia-smi -L 2>&1 | head -1); $($PY -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "numpy", numpy.__version__)')"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$REPO"/.device/wheels/*.whl || { log "wheels failed"; exit 1; }
mkdir -p /tmp/src /tmp/detkd_path
tar xzf "$REPO/.device/detectron2.tar.gz" -C /tmp/src
ln -sfn "$REPO/projects/detkd" /tmp/detkd_path/detkd
export PYTHONPATH=/tmp/src/detectron2:/tmp/detkd_path:/tmp/site${PYTHONPATH:+:$PYTHONPATH}

ARCH=$($PY -c 'import torch; m, n = torch.cuda.get_device_capability(); print(f"{m}.{n}")')
log "building detectron2 $(cat "$REPO/.device/DETECTRON2_COMMIT") for sm ${ARCH}"
start=$(date +%s)
(cd /tmp/src/detectron2 && TORCH_CUDA_ARCH_LIST="$ARCH" FORCE_CUDA=1 MAX_JOBS=$(nproc) \
  $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1) \
  || { log "build failed: tail of build.log"; tail -40 "$OUT/build.log"; exit 1; }
log "built in $(( $(date +%s) - start )) s"
$PY -c 'import detectron2._C, detkd; print("detectron2._C and detkd import")' 2>&1 | tee -a "$OUT/steps.log"

cd "$REPO"
log "CUDA tests"
timeout 240 $PY -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider > "$OUT/cuda_tests.log" 2>&1
log "CUDA tests: exit $? ($(tail -1 "$OUT/cuda_tests.log"))"
log "figures"
timeout 120 $PY benchmarks/bench_distill.py --device cuda --rounds 10 --steps 5 \
  --table "$OUT/bench_fp32.md" > "$OUT/bench_fp32.log" 2>&1; log "bench fp32: exit $?"
timeout 120 $PY benchmarks/bench_distill.py --device cuda --rounds 10 --steps 5 --amp \
  --table "$OUT/bench_amp.md" > "$OUT/bench_amp.log" 2>&1; log "bench amp: exit $?"
timeout 90 $PY benchmarks/bench_coco_step.py --device cuda --steps 10 \
  --table "$OUT/coco_step.md" > "$OUT/coco_step.log" 2>&1; log "coco step: exit $?"
log "the suite on this stack"
timeout 150 $PY -m pytest tests -q -x -p no:cacheprovider -n 8 -m "not cuda" \
  > "$OUT/suite.log" 2>&1
log "suite: exit $? ($(tail -1 "$OUT/suite.log"))"
