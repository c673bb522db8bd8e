#!/usr/bin/env python3
"""Reference values for `crates/dataset/src/transforms` (Pillow + NumPy, no torchvision).

Regenerate with:

    python3 -m venv /tmp/pyref && /tmp/pyref/bin/pip install pillow numpy
    /tmp/pyref/bin/python crates/dataset/tests/golden/transforms_reference.py

It writes `transforms_golden.json` next to this script. The Rust tests read that file with
`include_str!`, so regenerate and commit both together. Generated with Pillow 13.0.0 and
NumPy 2.4.6.

Every input is built from a closed-form pattern (no RNG), and every image is NON-square so an
H/W swap on the Rust side cannot pass.
"""

import json
import os

import numpy as np
from PIL import Image, ImageOps


def pattern(width, height, channels, salt=0):
    """A deterministic, high-variety u8 pattern, shape (H, W, C)."""
    y, x, c = np.meshgrid(
        np.arange(height), np.arange(width), np.arange(channels), indexing="ij"
    )
    v = (x * 37 + y * 53 + c * 91 + x * y * 11 + salt * 29 + (x ^ y) * 7) % 256
    return v.astype(np.uint8)


def to_pil(arr):
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], "L")
    return Image.fromarray(arr, "RGB")


def from_pil(img):
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def image_json(arr):
    h, w, c = arr.shape
    return {"width": int(w), "height": int(h), "channels": int(c), "data": arr.reshape(-1).tolist()}


def torchvision_center_crop(arr, crop_w, crop_h, fill=0):
    """torchvision.transforms.functional.center_crop, re-implemented with NumPy.

    Pads (constant `fill`) when the crop is larger than the image, then crops at
    `int(round((size - crop) / 2))` -- Python's round, i.e. half to even.
    """
    h, w, _ = arr.shape
    if crop_w > w or crop_h > h:
        left = (crop_w - w) // 2 if crop_w > w else 0
        top = (crop_h - h) // 2 if crop_h > h else 0
        right = (crop_w - w + 1) // 2 if crop_w > w else 0
        bottom = (crop_h - h + 1) // 2 if crop_h > h else 0
        arr = np.pad(arr, ((top, bottom), (left, right), (0, 0)), constant_values=fill)
        h, w, _ = arr.shape
        if crop_w == w and crop_h == h:
            return arr
    top = int(round((h - crop_h) / 2.0))
    left = int(round((w - crop_w) / 2.0))
    return arr[top : top + crop_h, left : left + crop_w, :]


FILTERS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos3": Image.LANCZOS,
    "box": Image.BOX,
}


def main():
    cases = []

    rgb_7x5 = pattern(7, 5, 3)
    gray_7x5 = pattern(7, 5, 1, salt=3)
    rgb_23x17 = pattern(23, 17, 3, salt=1)
    rgb_5x9 = pattern(5, 9, 3, salt=2)

    # Resize: up in one axis and down in the other, pure downscale (antialiasing matters) and
    # pure upscale, for every filter, RGB and gray.
    resize_specs = [
        ("rgb_7x5", rgb_7x5, 4, 6),
        ("gray_7x5", gray_7x5, 4, 6),
        ("rgb_23x17", rgb_23x17, 9, 13),
        ("rgb_23x17", rgb_23x17, 5, 3),
        ("rgb_5x9", rgb_5x9, 11, 14),
    ]
    for name, arr, w, h in resize_specs:
        for fname, f in FILTERS.items():
            out = from_pil(to_pil(arr).resize((w, h), f))
            cases.append(
                {
                    "op": "resize",
                    "name": f"{name}->{w}x{h}/{fname}",
                    "filter": fname,
                    "input": image_json(arr),
                    "expected": image_json(out),
                }
            )

    # Grayscale: PIL convert('L') (ITU-R 601-2 luma, fixed point with rounding).
    # 8 levels per channel, 0 and 255 included: 512 colours. (The fixed-point formula was also
    # checked against Pillow on all 2^24 colours when this was written.)
    levels = np.round(np.linspace(0, 255, 8)).astype(np.int64)
    grid = levels[np.indices((8, 8, 8)).reshape(3, -1).T]
    colours = grid.astype(np.uint8).reshape(16, 32, 3)
    for name, arr in [("rgb_7x5", rgb_7x5), ("colours_32x16", colours)]:
        out = from_pil(to_pil(arr).convert("L"))
        cases.append(
            {"op": "grayscale", "name": name, "input": image_json(arr), "expected": image_json(out)}
        )

    # Horizontal flip.
    for name, arr in [("rgb_7x5", rgb_7x5), ("gray_7x5", gray_7x5)]:
        out = from_pil(ImageOps.mirror(to_pil(arr)))
        cases.append({"op": "hflip", "name": name, "input": image_json(arr), "expected": image_json(out)})

    # Center crop (torchvision semantics), including odd margins and padding.
    for name, arr, cw, ch in [
        ("rgb_7x5", rgb_7x5, 4, 2),
        ("rgb_7x5", rgb_7x5, 3, 4),
        ("rgb_7x5", rgb_7x5, 2, 3),
        ("rgb_7x5", rgb_7x5, 9, 8),
        ("rgb_7x5", rgb_7x5, 5, 8),
        ("gray_7x5", gray_7x5, 10, 3),
    ]:
        out = torchvision_center_crop(arr, cw, ch)
        cases.append(
            {
                "op": "center_crop",
                "name": f"{name}->{cw}x{ch}",
                "input": image_json(arr),
                "expected": image_json(out),
            }
        )

    # Normalisation of an NCHW u8 batch, computed in float64 then rounded to float32.
    batch = np.stack([pattern(3, 2, 3).transpose(2, 0, 1), pattern(3, 2, 3, salt=5).transpose(2, 0, 1)])
    x = batch.astype(np.float64)
    imagenet_mean = np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    imagenet_std = np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    normalisations = {
        "minmax": x / 255.0,
        "imagenet": (x / 255.0 - imagenet_mean) / imagenet_std,
        "tanh": x / 127.5 - 1.0,
    }
    for name, out in normalisations.items():
        cases.append(
            {
                "op": "normalize",
                "name": name,
                "shape": list(batch.shape),
                "input": batch.reshape(-1).tolist(),
                "expected": out.astype(np.float32).reshape(-1).tolist(),
            }
        )

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "transforms_golden.json")
    with open(path, "w") as f:
        json.dump({"generator": "transforms_reference.py", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
