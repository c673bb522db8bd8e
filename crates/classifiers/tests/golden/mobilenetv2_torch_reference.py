#!/usr/bin/env python3
"""torchvision's own ``mobilenet_v2()`` with its ImageNet weights on input A of
``mobilenetv2_reference.py``: all 1000 logits in float32 and in float64.

Produces ``mobilenetv2_torch_reference.json`` beside this file, which
``crates/classifiers/tests/imagenet_golden.rs`` compares the Rust model against (and against
which it cross-checks the NumPy reference of ``mobilenetv2_reference.json``).

How it was produced (Python 3.11, torch 2.15.0, torchvision 0.29.2, Pillow 13.0)::

    scripts/fetch-assets.sh
    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch torchvision
    /tmp/torchenv/bin/python crates/classifiers/tests/golden/mobilenetv2_torch_reference.py

- weights: ``assets/mobilenet_v2-b0353104.pth`` (torchvision's IMAGENET1K_V1 state dict),
  read with ``torch.load(weights_only=True)`` into ``torchvision.models.mobilenet_v2()``,
  strictly (every key, no extra), eval mode;
- input A: ``assets/astronaut.png`` (512x512 RGB, lossless), its central 224x224 crop with no
  resizing (rows and columns 144..368), then torchvision's ``to_tensor`` (divide by 255) and
  ``normalize`` with the ImageNet mean / std: in float32 for the float32 model (what a torch
  user's pipeline computes), in float64 for the float64 model.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import functional as F

ROOT = Path(__file__).resolve().parents[4]
ASSETS = ROOT / "assets"
OUT = Path(__file__).resolve().with_name("mobilenetv2_torch_reference.json")
WEIGHTS = ASSETS / "mobilenet_v2-b0353104.pth"
IMAGE = ASSETS / "astronaut.png"
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    torch.set_num_threads(2)
    img = np.asarray(Image.open(IMAGE).convert("RGB"))
    assert img.shape == (512, 512, 3), img.shape
    crop = np.ascontiguousarray(img[144:368, 144:368])

    model = torchvision.models.mobilenet_v2(weights=None)
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()

    x32 = F.normalize(F.to_tensor(crop), MEAN, STD).unsqueeze(0)
    assert x32.dtype == torch.float32
    with torch.no_grad():
        y32 = model(x32)[0]
    x64 = torch.from_numpy(crop.astype(np.float64) / 255.0).permute(2, 0, 1)
    x64 = F.normalize(x64, MEAN, STD).unsqueeze(0)
    with torch.no_grad():
        y64 = model.double()(x64)[0]

    top5 = torch.argsort(y64, descending=True)[:5].tolist()
    out = {
        "produced_by": "crates/classifiers/tests/golden/mobilenetv2_torch_reference.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "sha256": {WEIGHTS.name: sha256(WEIGHTS), IMAGE.name: sha256(IMAGE)},
        "a": {
            "image": IMAGE.name,
            "preprocess": "centre crop 224x224 of the 512x512 PNG (rows/cols 144..368), no resize,"
            " to_tensor + normalize (ImageNet mean/std)",
            "top5": top5,
            "logits_float32": [float(v) for v in y32],
            "logits_float64": [float(v) for v in y64],
        },
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    diff = float((y32.double() - y64).abs().max())
    print(f"top5 {top5}; torch float32 vs float64: max |diff| {diff:.3e}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
