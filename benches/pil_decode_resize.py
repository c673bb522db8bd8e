#!/usr/bin/env python3
"""PIL reference for benches/decode_resize.rs: decode 178x218 JPEGs and resize to 128x128
(bilinear) with a pool of worker processes, the way a PyTorch DataLoader with num_workers=2
would. Prints images/s (best of --repeat passes over the folder).

    python3 benches/pil_decode_resize.py data-fixtures/celeba/img_align_celeba --workers 2
"""
import argparse
import os
import time
from multiprocessing import Pool

from PIL import Image


def decode_resize(path):
    with Image.open(path) as im:
        return len(im.convert("RGB").resize((128, 128), Image.BILINEAR).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--passes", type=int, default=10, help="passes over the folder per timing")
    a = ap.parse_args()
    files = sorted(
        os.path.join(a.folder, f) for f in os.listdir(a.folder) if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    work = files * a.passes
    best = 0.0
    with Pool(a.workers) as pool:
        pool.map(decode_resize, files[: a.workers * 4])  # warm the workers
        for _ in range(a.repeat):
            t = time.perf_counter()
            n = sum(1 for _ in pool.imap_unordered(decode_resize, work, chunksize=64))
            best = max(best, n / (time.perf_counter() - t))
    import PIL

    print(f"PIL {PIL.__version__} decode+resize 128x128, {a.workers} workers: {best:.0f} images/s ({len(files)} files)")


if __name__ == "__main__":
    main()
