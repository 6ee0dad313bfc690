#!/usr/bin/env bash
# Evaluate a cfmd-gan.lite training checkpoint the way the model card reports it (issue #12 protocol):
#   1. export the checkpoint's EMA weights (0 training steps; --init takes the checkpoint),
#   2. fit the do-no-harm gate on 120 training windows (python -m facedeblur.train.calibrate),
#   3. facedeblur bench quality on every validation-side kernel still and all PrAvg validation windows, with the
#      shipped weights, the blurry input and unsharp masking beside it; the ungated export too.
# Usage: tools/eval_cfmd_run.sh CHECKPOINT TAG [CONFIG] [MAX_SAMPLES]
#   e.g. tools/eval_cfmd_run.sh runs/lite-lr3x/last/checkpoint.safetensors step4000
# Writes runs/export-TAG, runs/cal-TAG, runs/bench-TAG. One thread; about 35 min on this 2-core CPU.
set -euo pipefail
ckpt=${1:?checkpoint}; tag=${2:?tag}
config=${3:-zoo_configs/finetune/cfmd-gan.lite.strong.yaml}; max=${4:-358}
data=${DATA:-../shared/data}; cache=${CACHE:-cache}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
rm -rf "runs/conv-$tag"
facedeblur train cfmd-gan.lite --name "conv-$tag" --config "$config" --init "$ckpt" --max-steps 0 \
  --export "runs/export-$tag" --data "$data" --cache-dir "$cache" --out runs --no-gan --val-max 4 --threads 1 --no-progress
python -m facedeblur.train.calibrate "runs/export-$tag" --data "$data" --cache-dir "$cache" --out "runs/cal-$tag" \
  --max-samples 120
facedeblur bench quality --models "local-dir:runs/cal-$tag,local-dir:runs/export-$tag,cfmd-gan.lite" \
  --baselines blurry,unsharp --data "$data" --cache-dir "$cache" --sets kernel,pravg --max-samples "$max" \
  --no-moments --threads 1 --out "runs/bench-$tag" -q
python - "$tag" <<'PY'
import json, sys
sys.path.insert(0, "tools")
from embed_weights import bench_summary
tag = sys.argv[1]
results = json.loads(open(f"runs/bench-{tag}/results.json").read())
for method in (f"local-dir:runs/cal-{tag}", f"local-dir:runs/export-{tag}", "cfmd-gan.lite"):
    print(method, json.dumps(bench_summary(results, method), indent=1))
PY
