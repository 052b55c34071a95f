#!/usr/bin/env bash
# The GPU half of docs/benchmarks-speed.md in one command: the CUDA tests, then HF vs Wren training at
# ~125M / ~350M dense and ~350M-total MoE, bf16, eager and per-block compiled, with MFU.
#
# For a machine that has CUDA PyTorch but not this project's environment (no network): wrenlm runs from
# the checkout (its folders linked into the package layout pyproject maps them to), and wheels found in
# .whl/ (e.g. transformers==5.24.0, which wrenlm needs) are installed beside it first.
# Results go to $OUT (default bench/results): gpu_tests.log, gpu_speed.md, gpu_speed.json (saved after
# each model, so a run cut short keeps what it finished).
set -o pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/bench/results}
SITE=$(mktemp -d /tmp/wren-site.XXXX)
mkdir -p "$SITE/wrenlm" "$OUT"
cp "$REPO"/wrenlm/*.py "$SITE/wrenlm/"
for folder in configuration modeling tokenization training conversion hub demo; do
    ln -s "$REPO/$folder" "$SITE/wrenlm/$folder"
done
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$REPO"/.whl/*.whl || exit 1
fi
export PYTHONPATH="$SITE:$REPO" PYTHONUNBUFFERED=1
cd /tmp || exit 1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())" || exit 1
timeout 180 python3 -m pytest -q -p no:cacheprovider -c "$REPO/pyproject.toml" --rootdir "$REPO" \
    "$REPO/tests/modeling/test_cuda.py" 2>&1 | tee "$OUT/gpu_tests.log"
python3 -m bench.model_bench --device cuda --bf16 --compile --only-train \
    --train-configs dense-125m,moe-350m,dense-350m --steps 20 --warmup 3 \
    --json "$OUT/gpu_speed.json" 2>&1 | tee "$OUT/gpu_speed.md"
