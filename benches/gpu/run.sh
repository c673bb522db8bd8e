#!/usr/bin/env bash
# The GPU check, in one call on the CUDA machine (see prepare.sh): the nn CUDA tests (every op
# against its CPU path), then each workload by the project and by PyTorch eager on the same
# card, and the ratios in OUTDIR/gpu-<card>-<date>.json. Needs gpu-carry/ from prepare.sh.
#   bash benches/gpu/run.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: run.sh OUTDIR}
mkdir -p "$OUT" gpu-carry/x
for f in throughput nn-cuda-tests; do
  xz -dc "gpu-carry/$f.xz" > "gpu-carry/x/$f" && chmod +x "gpu-carry/x/$f"
done
# shellcheck disable=SC1091
source gpu-carry/gpu-libs.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"

echo "== nn CUDA tests" | tee "$OUT/tests.log"
timeout 300 gpu-carry/x/nn-cuda-tests --test-threads 1 2>&1 | tee -a "$OUT/tests.log"

echo "== workloads: deeprecog, then PyTorch eager, each median of 20 steps"
: > "$OUT/rows.tsv"
grep -v '^#' benches/gpu/workloads.txt | while IFS='|' read -r name batch precision ours theirs; do
  [ -z "$name" ] && continue
  echo "-- $name, batch $batch, $precision" | tee -a "$OUT/workloads.log"
  amp=0 flag=""
  if [ "$precision" = bf16 ]; then amp=1 flag=--bf16; fi
  # shellcheck disable=SC2086
  a=$(timeout 150 gpu-carry/x/throughput $ours $flag --device cuda --iters 20 2>&1 | tee -a "$OUT/workloads.log")
  # shellcheck disable=SC2086
  b=$(ANCHOR_DEVICE=cuda ANCHOR_AMP=$amp timeout 150 python3 benches/torch_cpu_anchors.py $theirs 20 2>&1 | tee -a "$OUT/workloads.log")
  ms() { sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' | tail -1; }
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$batch" "$precision" "$(echo "$a" | ms)" "$(echo "$b" | ms)" >> "$OUT/rows.tsv"
done

echo "== the shared PyTorch reference script"
timeout 300 python3 gpu-carry/torch_anchors.py "$OUT" > "$OUT/torch_anchors.log" 2>&1

python3 benches/gpu/collect.py "$OUT"
