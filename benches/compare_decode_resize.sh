#!/usr/bin/env bash
# Decode+resize throughput of deeprecog (criterion) and of PIL with 2 worker processes, measured
# back to back on the same JPEGs. Needs python3 with Pillow (pip install pillow).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-data-fixtures/celeba/img_align_celeba}
python3 -c 'import PIL' 2>/dev/null || pip install --quiet pillow
DEEPRECOG_BENCH_IMAGES=$dir cargo bench --bench decode_resize -- --noplot 2>&1 | grep -E '^(decode_resize|u8_cache)|thrpt' || true
python3 benches/pil_decode_resize.py "$dir" --workers 2
