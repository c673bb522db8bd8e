#!/usr/bin/env bash
# Builds, on a machine without a GPU, everything the GPU check runs, into gpu-carry/ (ignored):
# the throughput example and the nn CUDA tests, built with `--features cudnn` for Hopper and
# xz-compressed, plus the loader-path helper. Then, on the CUDA machine, from the repository
# root:   bash benches/gpu/run.sh OUTDIR
#
# Needs ../shared/tools/cuda-env.sh (CUDA 13.0 toolchain wheels; first run downloads ~1.7 GB)
# or CUDA_HOME pointing at a CUDA 13.0 toolkit. Uses target/cuda so the CPU build stays.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENV_SH=${CUDA_ENV_SH:-../shared/tools/cuda-env.sh}
LIBS_SH=${GPU_LIBS_SH:-../shared/tools/gpu-libs.sh}
# shellcheck disable=SC1090
source "$ENV_SH" --cudnn
export CARGO_TARGET_DIR=target/cuda
mkdir -p gpu-carry
cargo build --release --features cudnn --example throughput
test_bin=$(cargo test --release --features cudnn -p deeprecog-nn --test cuda --no-run \
  --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
# Stripped: the release profile keeps line tables, and the carried folder is limited to 64 MiB.
strip -o gpu-carry/throughput target/cuda/release/examples/throughput
strip -o gpu-carry/nn-cuda-tests "$test_bin"
xz -T2 -6 -f gpu-carry/throughput gpu-carry/nn-cuda-tests
cp "$LIBS_SH" gpu-carry/gpu-libs.sh
cp ../shared/bench/torch_anchors.py gpu-carry/torch_anchors.py
ls -l gpu-carry
