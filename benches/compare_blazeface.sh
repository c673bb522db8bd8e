#!/usr/bin/env bash
# BlazeFace on one 640x360 frame: deeprecog's candle port (criterion bench `faces`) and
# onnxruntime on the same ONNX model, back to back, on the same cores. Needs the assets
# (scripts/fetch-assets.sh), ffmpeg, and a python3 where onnxruntime, numpy and Pillow can be
# installed (a scratch venv under target/ is used; nothing is added to the project).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/bench-venv
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import onnxruntime, PIL, numpy' 2>/dev/null ||
    "$VENV/bin/pip" install --quiet onnxruntime numpy pillow
FRAME=target/bench-frame-640x360.png
[[ -s $FRAME ]] || ffmpeg -v error -y -ss 30 -i assets/videos/franck.mp4 -frames:v 1 \
    -vf "scale=640:360" "$FRAME"
DEEPRECOG_BENCH_FRAME=$FRAME cargo bench --bench faces -- --noplot 2>&1 |
    grep -E '^(blazeface|video)|time:|thrpt' || true
for model in front_128x128 back_256x256; do
    "$VENV/bin/python" benches/onnxruntime_blazeface.py \
        "assets/blazeface/face_detection_$model.onnx" "$FRAME" --threads 2
done
