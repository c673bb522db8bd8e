#!/usr/bin/env python3
"""Reference logits of REAL torchvision / timm models with formula-generated weights.

Produces ``torchvision_reference.json`` beside this file, which
``crates/classifiers/tests/torchvision_golden.rs`` compares the Rust models against: the
``state_dict`` names and shapes of each model, and its logits on a fixed input.

How it was produced (Python 3.11, torch 2.15.0, torchvision 0.29.2, timm 1.0.31, numpy 2.4.6)::

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch torchvision timm
    /tmp/torchenv/bin/python crates/classifiers/tests/golden/torchvision_reference.py

With model names as arguments (``resnet18 legacy_xception``) it only prints the statistics of
those models and writes nothing.

No download and no pretrained weights: every model is built with ``weights=None`` (timm:
``pretrained=False``) and ``num_classes=10``, then EVERY ``state_dict`` entry except the
integer ``num_batches_tracked`` counters (candle's BatchNorm keeps none; they are listed in the
JSON but not compared) is overwritten with values given by the formula below, which the Rust test
reproduces bit for bit. The models then run in eval mode in float64 (and, for information, in
float32) on a fixed 2x3x64x80 input.

The formula, for a tensor called ``name`` with shape ``shape`` and element ``i`` in row-major
order (all integer arithmetic on unsigned 64 bits, wrapping):

- ``seed = fnv1a64(utf8(name))`` (offset 0xcbf29ce484222325, prime 0x100000001b3);
- ``z = splitmix64(seed + (i + 1) * 0x9e3779b97f4a7c15)``, ``splitmix64(z)`` being
  ``z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31``;
- ``u = (2 * (z >> 40) + 1 - 2**24) / 2**24``: uniform in (-1, 1) with at most 24 significant
  bits, so it is exact in float32 and float64 alike;
- the value is ``scale * u + offset`` (float64, correctly rounded operations only), cast to the
  model's dtype, with, by the last component of ``name`` and the rank:
  - ``weight`` of rank >= 2 (conv, linear): ``scale = sqrt(3 * gain / fan_in)``,
    ``fan_in = shape[1] * prod(shape[2:])``; ``gain`` is 2 (He-uniform, which keeps activations
    O(1) through ReLUs) except for the deep residual nets, whose sums would grow them block after
    block: 1.25 for ResNet-34 and Xception, 1.5 for ResNet-50 (recorded per model in the JSON);
  - ``weight`` of rank 1 (BatchNorm gamma): ``scale = 0.25``, ``offset = 1``;
  - ``bias`` (conv, linear, BatchNorm beta): ``scale = 0.1``;
  - ``running_mean``: ``scale = 0.1``; ``running_var``: ``scale = 0.5``, ``offset = 1.25``.
- the input is the same formula for the name ``"input"`` and shape ``(2, 3, 64, 80)`` with
  ``scale = 1``: non-square, odd-sized after the strided stems, two different images.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision

OUT = Path(__file__).resolve().with_name("torchvision_reference.json")
INPUT_SHAPE = (2, 3, 64, 80)
NUM_CLASSES = 10

# The ``gain`` of the weight formula per model: 2 (He) where the activations stay O(1), less
# where residual sums would otherwise grow them layer after layer.
GAIN = {
    "resnet18": 2.0,
    "resnet34": 1.25,
    "resnet50": 1.5,
    "mobilenet_v2": 2.0,
    "vgg16": 2.0,
    "vgg16_bn": 2.0,
    "legacy_xception": 1.25,
}

M64 = (1 << 64) - 1
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def uniform(name, numel):
    """``u`` of the docstring for elements 0 .. numel-1, as float64."""
    out = np.empty(numel, dtype=np.float64)
    seed = np.uint64(fnv1a64(name))
    chunk = 1 << 22
    with np.errstate(over="ignore"):
        for start in range(0, numel, chunk):
            i = np.arange(start + 1, min(numel, start + chunk) + 1, dtype=np.uint64)
            z = seed + i * GOLDEN
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            top = (z >> np.uint64(40)).astype(np.float64)
            out[start : start + len(i)] = (2.0 * top + 1.0 - 2.0**24) / 2.0**24
    return out


def formula(name, shape, gain):
    """The float64 values of the tensor ``name`` (see the module docstring)."""
    numel = math.prod(shape)
    u = uniform(name, numel)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) >= 2:
        fan_in = shape[1] * math.prod(shape[2:])
        v = math.sqrt(3.0 * gain / fan_in) * u
    elif leaf == "weight":
        v = 0.25 * u + 1.0
    elif leaf in ("bias", "running_mean"):
        v = 0.1 * u
    elif leaf == "running_var":
        v = 0.5 * u + 1.25
    else:
        sys.exit(f"no formula for {name}")
    return v.reshape(shape)


def models():
    tv = torchvision.models
    out = [
        ("resnet18", lambda: tv.resnet18(weights=None, num_classes=NUM_CLASSES)),
        ("resnet34", lambda: tv.resnet34(weights=None, num_classes=NUM_CLASSES)),
        ("resnet50", lambda: tv.resnet50(weights=None, num_classes=NUM_CLASSES)),
        ("mobilenet_v2", lambda: tv.mobilenet_v2(weights=None, num_classes=NUM_CLASSES)),
        ("vgg16", lambda: tv.vgg16(weights=None, num_classes=NUM_CLASSES)),
        ("vgg16_bn", lambda: tv.vgg16_bn(weights=None, num_classes=NUM_CLASSES)),
    ]
    try:
        import timm

        out.append(
            (
                "legacy_xception",
                lambda: timm.create_model(
                    "legacy_xception", pretrained=False, num_classes=NUM_CLASSES
                ),
            )
        )
    except ImportError:
        print("timm not installed: no Xception reference", file=sys.stderr)
    return out


def run(name, build, gain, x64):
    torch.manual_seed(0)
    model = build().eval().double()
    sd = model.state_dict()
    entries = []
    skipped = []
    for key, t in sd.items():
        if key.endswith("num_batches_tracked"):
            skipped.append(key)
            continue
        shape = tuple(t.shape)
        with torch.no_grad():
            t.copy_(torch.from_numpy(formula(key, shape, gain)))
        entries.append([key, list(shape)])
    model.load_state_dict(sd)

    # Activation magnitudes, to check the formula keeps every layer in a useful range.
    stats = {}

    def hook(mod_name):
        def f(_m, _i, o):
            if isinstance(o, torch.Tensor):
                stats[mod_name] = float(o.abs().max())

        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    with torch.no_grad():
        y64 = model(x64)
    for h in handles:
        h.remove()
    with torch.no_grad():
        y32 = model.float()(x64.float()).double()
    worst = max(stats.values())
    print(
        f"{name}: {len(entries)} tensors, {sum(math.prod(s) for _, s in entries)} values, "
        f"logits |max| {float(y64.abs().max()):.3f}, max |activation| {worst:.2f}, "
        f"torch f32 vs f64 {float((y32 - y64).abs().max()):.2e}"
    )
    return {
        "gain": gain,
        "state_dict": entries,
        "not_compared": skipped,
        "logits": y64.tolist(),
        "logits_torch_float32": y32.tolist(),
        "max_abs_activation": worst,
    }


def main():
    torch.set_num_threads(2)
    x = torch.from_numpy(uniform("input", math.prod(INPUT_SHAPE)).reshape(INPUT_SHAPE))
    out = {
        "produced_by": "crates/classifiers/tests/golden/torchvision_reference.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "input_shape": list(INPUT_SHAPE),
        "input_first_values": uniform("input", 3).tolist(),
        "num_classes": NUM_CLASSES,
        "models": {},
    }
    try:
        import timm

        out["timm"] = timm.__version__
    except ImportError:
        pass
    only = set(sys.argv[1:])
    for name, build in models():
        if only and name not in only:
            continue
        out["models"][name] = run(name, build, GAIN[name], x)
    if only:
        return
    OUT.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
