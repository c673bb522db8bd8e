#!/usr/bin/env bash
# The CPU-kernel comparison: deeprecog (`examples/throughput`) against PyTorch CPU (training
# steps) and onnxruntime (inference) on the same networks, batch sizes and cores, back to back,
# one row at a time. Prints each row's images/s and ratio and writes
# benches/results/cpu-<cpu>-f<family>m<model>-<date>.json (-<date>-b.json, -c, ... when that
# day's file exists):
#   {"cpu": "...", "cpu_family": f, "cpu_model": m, "simd": "avx512" | "avx2", "cores": n,
#    "date": "YYYY-MM-DD", "torch": "...", "onnxruntime": "...", "rounds": r,
#    "infer_rounds": i,
#    "rows": [{"workload", "batch", "mode", "anchor", "ours", "anchor_images_s", "ratio",
#              "ours_runs", "anchor_runs"}]}   (ours, anchor_images_s: medians of the runs)
# The anchors run in a scratch venv under target/ (torch, torchvision, onnx, onnxruntime);
# nothing is added to the project. ITERS (default 5) timed iterations per training row, ten
# times as many per inference row. ROUNDS (default 3) alternating runs of ours and the anchor
# per row, the median of each kept: the anchors' own rate drifts by up to a third between
# runs minutes apart on a shared 2-core machine, and alternating spreads that drift over both.
# INFER_ROUNDS (default three times ROUNDS) for the inference rows, whose runs take a second
# or two: the machine switches between two speeds from one run to the next (MobileNetV2 b1 at
# about 250 or about 150 images/s, whichever binary runs), and with three rounds one side
# could draw the slow state twice and the other the fast one (the 2026-12-05-e run: ours
# 146 / 142 / 218, onnxruntime 149 / 252 / 245).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/bench-venv-torch
ITERS=${ITERS:-5}
ROUNDS=${ROUNDS:-3}
INFER_ROUNDS=${INFER_ROUNDS:-$((ROUNDS * 3))}
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import torch, torchvision, onnx, onnxruntime' 2>/dev/null ||
    "$VENV/bin/pip" install --quiet torch torchvision onnx onnxruntime numpy
cargo build --release --example throughput
OURS=target/release/examples/throughput
rate() { "$@" | tail -n 1 | sed -n 's/^images\/s: //p'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# workload batch mode | our arguments | anchor arguments [| anchor environment]
# dcgan64-dfrozen runs our same GAN iteration against PyTorch with the discriminator's weights
# out of autograd during the generator's step, as ours are (pytorch/examples' loop, the
# dcgan64 row, computes their gradients there and discards them).
ROWS=(
    "scratch3 32 train|--model scratch3 --input 128 --batch 32 --train|scratch3 32 torch-train"
    "resnet50-frozen 32 train|--model resnet50 --input 128 --batch 32 --train --freeze layer1|resnet50-frozen 32 torch-train"
    "dcgan64 64 train|--gan dcgan64 --batch 64|dcgan64 64 torch-train"
    "dcgan64-dfrozen 64 train|--gan dcgan64 --batch 64|dcgan64 64 torch-train|ANCHOR_FREEZE_D=1"
    "mobilenetv2 16 train|--model mobilenetv2 --input 224 --batch 16 --train|mobilenetv2 16 torch-train"
    "scratch3 1 infer|--model scratch3 --input 128 --batch 1|scratch3 1 ort-infer"
    "scratch3 32 infer|--model scratch3 --input 128 --batch 32|scratch3 32 ort-infer"
    "resnet50 8 infer|--model resnet50 --input 224 --batch 8|resnet50 8 ort-infer"
    "mobilenetv2 1 infer|--model mobilenetv2 --input 224 --batch 1|mobilenetv2 1 ort-infer"
)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
# A virtual machine's model name can be as short as "AMD EPYC" for a Zen 3 and a Zen 4 alike:
# family, model and the widest vector extension tell them apart (and pick our kernels' path).
FAMILY=$(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
MODEL=$(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
SIMD=$(grep -m 1 -q ' avx512f' /proc/cpuinfo && echo avx512 || echo avx2)
DATE=$(date +%F)
OUT=benches/results/cpu-$(echo "$CPU" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')-f${FAMILY}m${MODEL}-$DATE.json
# A later run on the same day gets the next letter rather than replacing the day's first.
FIRST=$OUT
for suffix in b c d e f g h i j k l m n o p q r s t u v w x y z; do
    [[ -e $OUT ]] || break
    OUT=${FIRST%.json}-$suffix.json
done
JSON_ROWS=()
for row in "${ROWS[@]}"; do
    IFS='|' read -r label ours_args anchor_args anchor_env <<<"$row"
    read -r workload batch mode <<<"$label"
    # Inference iterations last milliseconds: ten times as many keep the median steady.
    iters=$ITERS
    rounds=$ROUNDS
    if [[ $mode == infer ]]; then
        iters=$((ITERS * 10))
        rounds=$INFER_ROUNDS
    fi
    read -r a_work a_batch engine <<<"$anchor_args"
    OURS_RATES=()
    ANCHOR_RATES=()
    for _ in $(seq "$rounds"); do
        # shellcheck disable=SC2086
        OURS_RATES+=("$(rate "$OURS" $ours_args --iters "$iters")")
        # shellcheck disable=SC2086
        ANCHOR_RATES+=("$(rate env $anchor_env "$VENV/bin/python" benches/torch_cpu_anchors.py "$a_work" "$a_batch" "$engine" "$iters" 2 2>/dev/null)")
    done
    ours=$(median "${OURS_RATES[@]}")
    anchor=$(median "${ANCHOR_RATES[@]}")
    ratio=$(python3 -c "print(f'{$ours / $anchor:.3f}')")
    printf '%-16s %3s %-5s  ours %8s images/s  %-11s %8s images/s  ratio %s  (ours %s; anchor %s)\n' \
        "$workload" "$batch" "$mode" "$ours" "$engine" "$anchor" "$ratio" "${OURS_RATES[*]}" "${ANCHOR_RATES[*]}"
    JSON_ROWS+=("{\"workload\": \"$workload\", \"batch\": $batch, \"mode\": \"$mode\", \"anchor\": \"$engine\", \"ours\": $ours, \"anchor_images_s\": $anchor, \"ratio\": $ratio, \"ours_runs\": [$(IFS=,; echo "${OURS_RATES[*]}")], \"anchor_runs\": [$(IFS=,; echo "${ANCHOR_RATES[*]}")]}")
done
VERSIONS=$("$VENV/bin/python" -c 'import torch, onnxruntime; print(torch.__version__, onnxruntime.__version__)')
read -r TORCH ORT <<<"$VERSIONS"
mkdir -p benches/results
{
    printf '{"cpu": "%s", "cpu_family": %s, "cpu_model": %s, "simd": "%s", "cores": %s, "date": "%s", "torch": "%s", "onnxruntime": "%s", "rounds": %s, "infer_rounds": %s, "rows": [\n' \
        "$CPU" "$FAMILY" "$MODEL" "$SIMD" "$(nproc)" "$DATE" "$TORCH" "$ORT" "$ROUNDS" "$INFER_ROUNDS"
    for i in "${!JSON_ROWS[@]}"; do
        sep=$([[ $i -lt $((${#JSON_ROWS[@]} - 1)) ]] && echo "," || true)
        printf '  %s%s\n' "${JSON_ROWS[$i]}" "$sep"
    done
    printf ']}\n'
} >"$OUT"
echo "wrote $OUT"
