#!/usr/bin/env python3
"""Writes tiny files in PyTorch's checkpoint layouts without PyTorch, plus the values a reader
must find in them, for crates/nn/tests/import.rs.

    python3 make_torch_like.py                 # (re)writes the golden files beside this script
    python3 make_torch_like.py --reference F   # NumPy-only reading of a legacy checkpoint F,
                                               # printed as JSON (the independent reference)

Only pickle, zipfile, struct, json and numpy are used. Fake `torch` modules are registered in
sys.modules so pickle emits exactly the globals torch.save does
(torch._utils._rebuild_tensor_v2, torch.FloatStorage, collections.OrderedDict, ...).
"""
import collections
import copyreg
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# --- fake torch ---------------------------------------------------------------------------
torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch_utils
torch._utils = torch_utils

STORAGE_NAMES = {
    "f64": "DoubleStorage", "f32": "FloatStorage", "f16": "HalfStorage", "bf16": "BFloat16Storage",
    "i64": "LongStorage", "i32": "IntStorage", "u8": "ByteStorage", "bool": "BoolStorage",
    "i16": "ShortStorage", "i8": "CharStorage",
}
for _n in STORAGE_NAMES.values():
    _cls = type(_n, (), {"__module__": "torch"})
    setattr(torch, _n, _cls)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    raise RuntimeError("never called when writing")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Storage:
    """Raw storage bytes of one dtype, with a key as torch's persistent_id gives it."""

    def __init__(self, key, dtype, raw, numel):
        self.key, self.dtype, self.raw, self.numel = key, dtype, raw, numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (_rebuild_tensor_v2,
                (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                 collections.OrderedDict()))


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, STORAGE_NAMES[obj.dtype]), obj.key, "cpu", obj.numel)
        return None


def bf16_bits(values):
    bits = np.asarray(values, dtype=np.float32).view(np.uint32) >> 16
    return bits.astype(np.uint16)


def bf16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def raw_of(dtype, values):
    if dtype == "bf16":
        return bf16_bits(values).tobytes()
    np_dtype = {"f64": "<f8", "f32": "<f4", "f16": "<f2", "i64": "<i8", "i32": "<i4",
                "u8": "u1", "bool": "?", "i16": "<i2", "i8": "i1"}[dtype]
    return np.asarray(values).astype(np_dtype).tobytes()


def expected_values(dtype, storage_values, offset, size, stride):
    flat = np.asarray(storage_values)
    if dtype == "bf16":
        flat = bf16_values(bf16_bits(flat))
    elif dtype == "f16":
        flat = flat.astype(np.float16).astype(np.float64)
    elif dtype == "f32":
        flat = flat.astype(np.float32).astype(np.float64)
    out = []
    for idx in np.ndindex(*size) if size else [()]:
        out.append(flat[offset + sum(i * s for i, s in zip(idx, stride))].item())
    return [float(v) if dtype in ("f64", "f32", "f16", "bf16") else int(v) for v in out]


class Builder:
    """Collects storages and tensors plus what a reader must find."""

    def __init__(self):
        self.storages = []
        self.expect = []

    def storage(self, dtype, values):
        s = Storage(str(len(self.storages)), dtype, raw_of(dtype, values), len(values))
        s.values = values
        self.storages.append(s)
        return s

    def tensor(self, name, storage, offset, size, stride):
        self.expect.append({
            "name": name, "dtype": storage.dtype, "shape": list(size),
            "values": expected_values(storage.dtype, storage.values, offset, size, stride),
        })
        return Tensor(storage, offset, size, stride)


def sample_state_dict(b):
    sd = collections.OrderedDict()
    s = b.storage("f32", [0.5 * i - 1.0 for i in range(6)])
    sd["conv.weight"] = b.tensor("conv.weight", s, 0, [2, 3], [3, 1])
    # A transposed (non-contiguous) view of a shared storage.
    sd["conv.weight_t"] = b.tensor("conv.weight_t", s, 0, [3, 2], [1, 3])
    sd["f64.offset"] = b.tensor("f64.offset", b.storage("f64", [1e-300, 2.5, -3.25, 7.0]), 1, [3], [1])
    sd["half"] = b.tensor("half", b.storage("f16", [0.1, -2.0, 65504.0]), 0, [3], [1])
    sd["bfloat"] = b.tensor("bfloat", b.storage("bf16", [3.140625, -0.5, 1e20]), 0, [3], [1])
    sd["bn.num_batches_tracked"] = b.tensor("bn.num_batches_tracked", b.storage("i64", [123456789012]), 0, [], [])
    sd["ints"] = b.tensor("ints", b.storage("i32", [-7, 8, 2**31 - 1, 0]), 0, [2, 2], [1, 2])
    sd["bytes"] = b.tensor("bytes", b.storage("u8", [0, 255, 17]), 0, [3], [1])
    sd["mask"] = b.tensor("mask", b.storage("bool", [True, False, True]), 0, [3], [1])
    sd["expanded"] = b.tensor("expanded", b.storage("f32", [9.0, 8.0]), 0, [3, 2], [0, 1])
    sd["empty"] = b.tensor("empty", b.storage("f32", []), 0, [0, 4], [4, 1])
    return sd


def legacy_bytes(obj, b, protocol=2):
    f = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=protocol)
    pickle.dump(1001, f, protocol=protocol)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=protocol)
    TorchPickler(f, protocol=protocol).dump(obj)
    keys = sorted((s.key for s in b.storages), key=int)
    pickle.dump(keys, f, protocol=protocol)
    by_key = {s.key: s for s in b.storages}
    for k in keys:
        s = by_key[k]
        f.write(struct.pack("<q", s.numel))
        f.write(s.raw)
    return f.getvalue()


def zip_bytes(obj, b, folder="archive", protocol=2, extra=None):
    pk = io.BytesIO()
    TorchPickler(pk, protocol=protocol).dump(obj)
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{folder}/data.pkl", pk.getvalue())
        z.writestr(f"{folder}/byteorder", "little")
        for s in b.storages:
            z.writestr(f"{folder}/data/{s.key}", s.raw)
        z.writestr(f"{folder}/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(f"{folder}/{name}", data)
    return f.getvalue()


# TorchScript modules pickle as __torch__.<qualname> objects: NEWOBJ then BUILD with a dict.
ts = types.ModuleType("__torch__")
sys.modules["__torch__"] = ts


class Net:
    pass


class Block:
    pass


for _c in (Net, Block):
    _c.__module__ = "__torch__"
    setattr(ts, _c.__name__, _c)


def torchscript_obj(b):
    block = Block()
    block.__dict__.update({
        "training": False,
        "weight": b.tensor("block.weight", b.storage("f32", [1.0, 2.0, 3.0, 4.0]), 0, [2, 2], [2, 1]),
        "running_mean": b.tensor("block.running_mean", b.storage("f32", [0.25, 0.75]), 0, [2], [1]),
    })
    net = Net()
    net.__dict__.update({
        "training": False,
        "block": block,
        "head": b.tensor("head", b.storage("f64", [6.0, 5.0, 4.0]), 0, [3], [1]),
    })
    return net


def write_golden():
    expected = {}

    b = Builder()
    data = legacy_bytes(sample_state_dict(b), b)
    expected["legacy.pth"] = {"format": "Legacy", "picked": None, "tensors": b.expect}
    files = {"legacy.pth": data}

    b = Builder()
    ckpt = {"epoch": 3, "lr": 0.1, "state_dict": sample_state_dict(b)}
    files["zip_checkpoint.pth"] = zip_bytes(ckpt, b, folder="zip_checkpoint", protocol=4)
    expected["zip_checkpoint.pth"] = {"format": "Zip", "picked": "state_dict", "tensors": b.expect}

    b = Builder()
    x = b.storage("f32", [1.5, -2.5])
    nested = {"encoder": {"w": b.tensor("encoder.w", x, 0, [2], [1])},
              "stages": [b.tensor("stages.0", x, 1, [1], [1]), "not a tensor"],
              "step": 10}
    files["nested_legacy.pth"] = legacy_bytes(nested, b)
    expected["nested_legacy.pth"] = {"format": "Legacy", "picked": None, "tensors": b.expect}

    b = Builder()
    net = torchscript_obj(b)
    files["torchscript.pt"] = zip_bytes(net, b, folder="net", extra={
        "constants.pkl": pickle.dumps((), protocol=2),
        "code/__torch__.py": "class Net(Module):\n  pass\n",
    })
    expected["torchscript.pt"] = {"format": "TorchScript", "picked": None, "tensors": b.expect}

    for name, data in files.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


# --- the NumPy-only reference reader ------------------------------------------------------
NP_OF_STORAGE = {"DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
                 "LongStorage": "<i8", "IntStorage": "<i4", "ByteStorage": "u1",
                 "BoolStorage": "?", "ShortStorage": "<i2", "CharStorage": "i1"}


class LazyTensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self, raw):
        flat = np.frombuffer(raw[self.storage["key"]], dtype=self.storage["np"])
        idx = self.offset + sum(
            np.arange(n).reshape([-1 if i == d else 1 for i in range(len(self.size))]) * s
            for d, (n, s) in enumerate(zip(self.size, self.stride))) if self.size else self.offset
        return flat[idx] if self.size else flat[self.offset]


class RefUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda st, off, size, stride, *rest: LazyTensor(st, off, size, stride)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in NP_OF_STORAGE:
            return name
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):
        _, kind, key, _loc, numel = pid[:5]
        return {"key": key, "np": NP_OF_STORAGE[kind], "numel": numel}


def reference(path):
    with open(path, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        sd = RefUnpickler(f).load()
        keys = pickle.load(f)
        raw = {}
        dtypes = {t.storage["key"]: np.dtype(t.storage["np"]) for t in sd.values()}
        for k in keys:
            (n,) = struct.unpack("<q", f.read(8))
            raw[k] = f.read(n * dtypes[k].itemsize)
    out = {"count": len(sd), "tensors": {}}
    for name, t in sd.items():
        a = np.asarray(t.array(raw))
        out["tensors"][name] = {"shape": list(a.shape), "sum": float(a.astype(np.float64).sum()),
                                "first": [float(v) for v in a.reshape(-1)[:5]]}
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--reference":
        ref = reference(sys.argv[2])
        keep = ["features.0.0.weight", "features.0.1.running_var", "features.18.1.bias",
                "classifier.1.weight", "classifier.1.bias"]
        ref["tensors"] = {k: v for k, v in ref["tensors"].items() if k in keep}
        json.dump(ref, sys.stdout, indent=1, sort_keys=True)
        print()
    else:
        write_golden()
