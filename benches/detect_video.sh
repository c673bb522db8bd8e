#!/usr/bin/env bash
# `deepfake detect` on a 10 s talking-head clip with 32 sampled frames, on the CPU: wall time
# and its split into decoding, face detection (BlazeFace front) and the classifier, five runs.
# Target: under 4 s on a 2-core machine. Needs the assets (scripts/fetch-assets.sh), ffmpeg,
# and a trained detector: by default the quickstart's (`cargo run --release --example
# quickstart` writes runs/quickstart/deepfake), or give its folder as the first argument.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/quickstart/deepfake}
[[ -s $MODEL/detector.json ]] || { echo "no detector in $MODEL; run the quickstart first" >&2; exit 1; }
CLIP=target/bench-clip-10s.mp4
[[ -s $CLIP ]] || ffmpeg -v error -y -i assets/videos/franck.mp4 -t 10 -c copy "$CLIP"
cargo build --release --example deepfake 2>/dev/null
for _ in 1 2 3 4 5; do
    /usr/bin/time -f "wall %e s" target/release/examples/deepfake detect "$CLIP" \
        --model "$MODEL" --detector blazeface --frames 32 2>&1 | tail -2
done
