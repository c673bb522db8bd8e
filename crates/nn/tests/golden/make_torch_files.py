#!/usr/bin/env python3
"""Writes small checkpoints with *real* PyTorch (torch.save / torch.jit.save) and the tensors a
reader must find in them, for crates/nn/tests/import_torch.rs.

make_torch_like.py beside this script emulates torch's layouts with plain pickle; these files
are the real thing, so the crate's pickle machine meets exactly what torch writes (opcodes,
globals, persistent ids, zip entry names and alignment, TorchScript's module tree).

Files (each a few KB):
  torch_zip.pth        torch.save(state_dict) in the zip format (the default since PyTorch 1.6)
  torch_legacy.pth     the same object with _use_new_zipfile_serialization=False
  torch_checkpoint.pth a training checkpoint {"epoch", "model_state_dict", "optimizer_state_dict",
                       ...} (the reader must pick "model_state_dict")
  torch_module.pth     torch.save(model): a whole pickled eager nn.Module
  torch_script.pt      torch.jit.save(torch.jit.script(model)) of a conv + bn + linear module
  torch_expected.json  for every file: format, picked key, and per tensor (in order) the name,
                       dtype, shape, values (row-major, as Python floats/ints) and the exact
                       row-major little-endian bytes in hex

The state dict holds f32/f64/f16/bf16/i64/i32/i16/i8/u8/bool tensors, a transposed
(non-contiguous) view, a stride-0 expanded view, a channels-last tensor, 0-dim tensors, an empty
tensor, two slices sharing one storage at different offsets, and nested OrderedDicts.

Produced with torch 2.15.0 (CPU) from the repository root:
    /tmp/torchenv/bin/python crates/nn/tests/golden/make_torch_files.py
(any Python with torch works; the JSON records the version that wrote the files). Rerunning
rewrites torch_zip.pth, torch_checkpoint.pth, torch_module.pth and the JSON byte for byte;
torch_legacy.pth and torch_script.pt may differ in bytes (storage keys, archive metadata) but
hold the same tensors, which the script checks by loading every file back with torch.
"""
import collections
import copy
import json
import os
import warnings

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))

DTYPE_NAMES = {
    torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8",
    torch.uint8: "u8", torch.bool: "bool",
}


def ramp(n, scale=0.37, shift=0.5):
    """Deterministic, irregular values in [-shift, 1 - shift) without an RNG."""
    return [((i * scale) % 1.0) - shift for i in range(n)]


def sample_state_dict():
    sd = collections.OrderedDict()
    w = torch.tensor(ramp(24), dtype=torch.float32).reshape(2, 3, 2, 2)
    sd["conv.weight"] = w
    m = torch.tensor([[1.5, -2.25, 3.0], [0.125, 7.0, -0.5]], dtype=torch.float32)
    sd["fc.weight_t"] = m.t()  # non-contiguous: stride (1, 3)
    assert not sd["fc.weight_t"].is_contiguous()
    sd["f64"] = torch.tensor([1e-300, 3.141592653589793, -2.5e300, 0.1], dtype=torch.float64)
    sd["half"] = torch.tensor([0.1, -2.0, 65504.0, 6e-8], dtype=torch.float16)
    sd["bfloat"] = torch.tensor([3.140625, -0.5, 1e20, 1e-20], dtype=torch.bfloat16)
    sd["bn.num_batches_tracked"] = torch.tensor(123456789012, dtype=torch.int64)  # 0-dim
    sd["scalar"] = torch.tensor(-0.75, dtype=torch.float32)  # 0-dim float
    sd["ints"] = torch.tensor([[-7, 8], [2**31 - 1, -2**31]], dtype=torch.int32)
    sd["shorts"] = torch.tensor([-32768, 32767, 5], dtype=torch.int16)
    sd["chars"] = torch.tensor([-128, 127, -1], dtype=torch.int8)
    sd["bytes"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd["mask"] = torch.tensor([True, False, True, True])
    sd["empty"] = torch.empty(0, 4, dtype=torch.float32)
    # Two views of one storage at different offsets: saved once, read twice.
    base = torch.arange(10, dtype=torch.float32) * 0.5 - 2.0
    sd["shared.a"] = base[1:4]
    sd["shared.b"] = base[2:].reshape(2, 4)
    assert sd["shared.a"].untyped_storage().data_ptr() == sd["shared.b"].untyped_storage().data_ptr()
    sd["expanded"] = torch.tensor([9.0, -8.0], dtype=torch.float32).expand(3, 2)  # stride (0, 1)
    cl = torch.tensor(ramp(2 * 3 * 2 * 2, 0.61), dtype=torch.float32).reshape(2, 3, 2, 2)
    sd["channels_last"] = cl.contiguous(memory_format=torch.channels_last)
    assert not sd["channels_last"].is_contiguous()
    nested = collections.OrderedDict()
    nested["inner"] = collections.OrderedDict(
        [("w", torch.tensor([[1.0, 2.0]], dtype=torch.float64)),
         ("steps", torch.tensor([3, 4, 5], dtype=torch.int64))])
    nested["bias"] = torch.tensor([0.25], dtype=torch.float32)
    sd["nested"] = nested
    return sd


def flatten(prefix, obj, out):
    """(name, tensor) pairs in the order the pickle lists them, names joined with dots."""
    if isinstance(obj, torch.Tensor):
        out.append((prefix, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(f"{prefix}.{i}" if prefix else str(i), v, out)
    return out


def describe(name, t):
    t = t.detach()
    flat = t.contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    if t.dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        values = [float(v) for v in flat.double().tolist()]
    else:
        values = [int(v) for v in flat.long().tolist()]
    return {"name": name, "dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
            "values": values, "hex": raw.hex()}


class Tiny(nn.Module):
    """conv + bn + linear, small enough that the TorchScript archive stays a few KB."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_model():
    model = Tiny()
    with torch.no_grad():
        for i, (name, t) in enumerate(model.state_dict().items()):
            if t.dtype.is_floating_point:
                t.copy_(torch.tensor(ramp(t.numel(), 0.37 + 0.01 * i), dtype=t.dtype)
                        .reshape(t.shape))
        model.bn.running_var.abs_().add_(0.5)
        model.bn.num_batches_tracked.fill_(7)
    return model.eval()


def save(name, obj, **kw):
    path = os.path.join(HERE, name)
    torch.save(obj, path, **kw)
    return path


def main():
    # torch.jit.* print deprecation warnings in favour of torch.export; the archive is what we want.
    warnings.simplefilter("ignore", FutureWarning)
    expected = collections.OrderedDict()
    sd = sample_state_dict()
    tensors = [describe(n, t) for n, t in flatten("", sd, [])]

    save("torch_zip.pth", sd)
    expected["torch_zip.pth"] = {"format": "Zip", "picked": None, "tensors": tensors}
    save("torch_legacy.pth", sd, _use_new_zipfile_serialization=False)
    expected["torch_legacy.pth"] = {"format": "Legacy", "picked": None, "tensors": tensors}

    # The training checkpoint holds a copy of the model after one Adam step in train mode
    # (parameters and BN statistics moved, num_batches_tracked 7 -> 8); the module and
    # TorchScript files below hold the untouched model.
    model = tiny_model()
    trained = copy.deepcopy(model).train()
    opt = torch.optim.Adam(trained.parameters(), lr=1e-3)
    x = torch.tensor(ramp(2 * 2 * 4 * 4), dtype=torch.float32).reshape(2, 2, 4, 4)
    trained(x).sum().backward()
    opt.step()
    trained_sd = trained.eval().state_dict()
    ckpt = {"epoch": 3, "best_acc": 0.875, "arch": "tiny",
            "model_state_dict": trained_sd, "optimizer_state_dict": opt.state_dict()}
    save("torch_checkpoint.pth", ckpt)
    expected["torch_checkpoint.pth"] = {
        "format": "Zip", "picked": "model_state_dict",
        "tensors": [describe(n, t) for n, t in trained_sd.items()]}

    save("torch_module.pth", model)
    expected["torch_module.pth"] = {
        "format": "Zip", "picked": None,
        "tensors": [describe(n, t) for n, t in model.state_dict().items()]}

    scripted = torch.jit.script(model)
    scripted.save(os.path.join(HERE, "torch_script.pt"))
    expected["torch_script.pt"] = {
        "format": "TorchScript", "picked": None,
        "tensors": [describe(n, t) for n, t in scripted.state_dict().items()]}

    # The files must load back in torch with exactly these tensors.
    for name, exp in expected.items():
        path = os.path.join(HERE, name)
        if name.endswith(".pt"):
            loaded = torch.jit.load(path).state_dict()
        else:
            loaded = torch.load(path, weights_only=False)
            if exp["picked"]:
                loaded = loaded[exp["picked"]]
            elif isinstance(loaded, nn.Module):
                loaded = loaded.state_dict()
        got = [describe(n, t) for n, t in flatten("", loaded, [])]
        assert got == exp["tensors"], name

    doc = {"_comment": (f"Written by make_torch_files.py with torch {torch.__version__}; "
                        "do not edit."),
           "files": expected}
    with open(os.path.join(HERE, "torch_expected.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    for name in expected:
        print(name, os.path.getsize(os.path.join(HERE, name)), "bytes")


if __name__ == "__main__":
    main()
