#!/usr/bin/env python3
"""Independent reference for torchvision's ImageNet MobileNetV2, in NumPy (no PyTorch).

Produces ``mobilenetv2_reference.json`` beside this file, which
``crates/classifiers/tests/imagenet_golden.rs`` compares the Rust model against.

How it was produced (Python 3.11, numpy 2.4, Pillow 13.0)::

    scripts/fetch-assets.sh
    python3 crates/classifiers/tests/golden/mobilenetv2_reference.py

Inputs (the files ``scripts/fetch-assets.sh`` puts in ``assets/``; their SHA-256 are recorded):

- weights: ``mobilenet_v2-b0353104.pth``, torchvision's IMAGENET1K_V1 state dict in PyTorch's
  legacy (non-zip) serialization. It is read by the small unpickler below, which builds NumPy
  arrays and never imports or executes anything from the file.
- input A: ``astronaut.png`` (512x512 RGB, lossless), the central 224x224 crop taken without
  any resizing (rows and columns 144..368), scaled to [0, 1] and normalised with the ImageNet
  mean / std. Both sides decode PNG exactly, so A tests the network alone: all 1000 logits are
  recorded.
- input B: ``grace_hopper.jpg`` (512x600) through torchvision's eval preprocessing done with
  Pillow: ``resize((256, 300), BILINEAR)`` (the shorter side to 256, the longer one
  ``int(256 * 600 / 512)``) and the central 224x224 crop (left 16, top 38), then the same
  normalisation. JPEG decoders and resize implementations differ by a few levels, so for B only
  the top-5 classes and probabilities are recorded (plus the per-channel mean of the 224x224
  crop, to see how close another pipeline's pixels are).

The forward pass is torchvision's ``mobilenet_v2()`` in float64: conv2d as im2col + einsum,
BatchNorm in eval mode (running statistics, eps 1e-5), ReLU6, depthwise convolutions
(``groups == channels``), inverted residual blocks with identity shortcuts, the final 1x1 conv
to 1280 channels, global average pooling, then ``classifier.1`` (the dropout is the identity in
eval mode).
"""

import hashlib
import json
import pickle
import struct
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[4]
ASSETS = ROOT / "assets"
OUT = Path(__file__).resolve().with_name("mobilenetv2_reference.json")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
BN_EPS = 1e-5

# (expansion t, output channels c, repeats n, first stride s), MobileNetV2 paper table 2.
SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

# ---------------------------------------------------------------------------------------------
# Legacy torch.save reader.

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only the element type matters."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class StorageRef:
    """A storage named in the pickle; its bytes follow the pickles in the file."""

    def __init__(self, key, dtype, numel):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data = None


class PendingTensor:
    """``_rebuild_tensor_v2``'s arguments, resolved once the storages have been read."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def resolve(self):
        flat = self.storage.data
        if not self.size:
            return flat[self.offset].copy()
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
        )
        return np.array(view)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return PendingTensor(storage, offset, size, stride)


class LegacyUnpickler(pickle.Unpickler):
    """Knows only the handful of globals a state dict pickle names; refuses everything else."""

    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata])
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = StorageRef(key, storage_type.dtype, numel)
        return self.storages[key]


class PlainUnpickler(pickle.Unpickler):
    """For the header pickles, which hold only plain Python values."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")


def load_legacy_state_dict(path):
    storages = {}
    with open(path, "rb") as f:
        magic = PlainUnpickler(f).load()
        if magic != LEGACY_MAGIC:
            sys.exit(f"{path}: not a legacy torch.save file (magic {magic!r})")
        PlainUnpickler(f).load()  # protocol version
        PlainUnpickler(f).load()  # system info
        state = LegacyUnpickler(f, storages).load()
        keys = PlainUnpickler(f).load()
        for key in keys:
            ref = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * ref.dtype.itemsize)
            if numel != ref.numel or len(raw) != numel * ref.dtype.itemsize:
                sys.exit(f"{path}: storage {key} truncated or inconsistent")
            ref.data = np.frombuffer(raw, dtype=ref.dtype)
    return OrderedDict((name, t.resolve()) for name, t in state.items())


# ---------------------------------------------------------------------------------------------
# The network, on a single CHW float64 image.


def conv2d(x, w, stride, padding, groups):
    c, h, wd = x.shape
    cout, cin_g, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
    win = win[:, ::stride, ::stride]  # (C, Ho, Wo, k, k)
    if groups == 1:
        return np.einsum("chwij,ocij->ohw", win, w, optimize=True)
    if groups == c == cout and cin_g == 1:
        return np.einsum("chwij,cij->chw", win, w[:, 0], optimize=True)
    raise ValueError(f"unsupported groups={groups} for weight {w.shape}")


def batch_norm(x, sd, prefix):
    mean = sd[prefix + ".running_mean"]
    var = sd[prefix + ".running_var"]
    gamma = sd[prefix + ".weight"]
    beta = sd[prefix + ".bias"]
    scale = gamma / np.sqrt(var + BN_EPS)
    return x * scale[:, None, None] + (beta - mean * scale)[:, None, None]


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def conv_bn_relu6(x, sd, prefix, stride):
    w = sd[prefix + ".0.weight"]
    k = w.shape[-1]
    groups = x.shape[0] if w.shape[1] == 1 and x.shape[0] > 1 else 1
    y = conv2d(x, w, stride, (k - 1) // 2, groups)
    return relu6(batch_norm(y, sd, prefix + ".1"))


def inverted_residual(x, sd, prefix, t, stride, cout):
    cin = x.shape[0]
    y = x
    i = 0
    if t != 1:
        y = conv_bn_relu6(y, sd, f"{prefix}.conv.{i}", 1)
        i += 1
    y = conv_bn_relu6(y, sd, f"{prefix}.conv.{i}", stride)
    y = conv2d(y, sd[f"{prefix}.conv.{i + 1}.weight"], 1, 0, 1)
    y = batch_norm(y, sd, f"{prefix}.conv.{i + 2}")
    if stride == 1 and cin == cout:
        y = y + x
    return y


def mobilenet_v2(x, sd):
    x = conv_bn_relu6(x, sd, "features.0", 2)
    idx = 1
    for t, c, n, s in SETTING:
        for r in range(n):
            x = inverted_residual(x, sd, f"features.{idx}", t, s if r == 0 else 1, c)
            idx += 1
    x = conv_bn_relu6(x, sd, f"features.{idx}", 1)
    pooled = x.mean(axis=(1, 2))
    return sd["classifier.1.weight"] @ pooled + sd["classifier.1.bias"]


# ---------------------------------------------------------------------------------------------
# Inputs and outputs.


def normalise(rgb_u8):
    x = rgb_u8.astype(np.float64) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def centre_crop(img, size):
    h, w = img.shape[:2]
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img[top : top + size, left : left + size]


def input_a():
    img = np.asarray(Image.open(ASSETS / "astronaut.png").convert("RGB"))
    assert img.shape == (512, 512, 3), img.shape
    return centre_crop(img, 224)


def input_b():
    img = Image.open(ASSETS / "grace_hopper.jpg").convert("RGB")
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_long = int(256 * long / short)
    size = (256, new_long) if w <= h else (new_long, 256)
    img = img.resize(size, Image.BILINEAR)
    return centre_crop(np.asarray(img), 224)


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def top_k(logits, names, k=5):
    p = softmax(logits)
    order = np.argsort(-logits)[:k]
    return [
        {"index": int(i), "name": names[i], "logit": float(logits[i]), "probability": float(p[i])}
        for i in order
    ]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main():
    weights = ASSETS / "mobilenet_v2-b0353104.pth"
    classes = ASSETS / "imagenet_classes.txt"
    names = classes.read_text(encoding="utf-8").splitlines()
    assert len(names) == 1000
    sd = {k: v.astype(np.float64) for k, v in load_legacy_state_dict(weights).items()}

    a = input_a()
    logits_a = mobilenet_v2(normalise(a), sd)
    b = input_b()
    logits_b = mobilenet_v2(normalise(b), sd)

    out = {
        "produced_by": "crates/classifiers/tests/golden/mobilenetv2_reference.py",
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "sha256": {
            "mobilenet_v2-b0353104.pth": sha256(weights),
            "astronaut.png": sha256(ASSETS / "astronaut.png"),
            "grace_hopper.jpg": sha256(ASSETS / "grace_hopper.jpg"),
        },
        "a": {
            "image": "astronaut.png",
            "preprocess": "centre crop 224x224 of the 512x512 PNG (rows/cols 144..368), no resize",
            "top5": top_k(logits_a, names),
            "logits": [float(v) for v in logits_a],
        },
        "b": {
            "image": "grace_hopper.jpg",
            "preprocess": "Pillow resize to 256x300 (BILINEAR), centre crop 224x224",
            "channel_mean": [float(v) for v in b.reshape(-1, 3).mean(axis=0)],
            "top5": top_k(logits_b, names),
        },
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    for key in ("a", "b"):
        print(key, [(t["index"], t["name"], round(t["probability"], 4)) for t in out[key]["top5"]])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
