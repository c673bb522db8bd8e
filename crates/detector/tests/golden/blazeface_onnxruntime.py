"""Golden raw outputs of MediaPipe BlazeFace (front 128 and back 256) run by onnxruntime.

Reference for crates/detector/tests/blazeface.rs. Run from the workspace root after
scripts/fetch-assets.sh, in a scratch environment (never a project dependency):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install onnxruntime==1.32.0 numpy pillow
    /tmp/venv/bin/python crates/detector/tests/golden/blazeface_onnxruntime.py

Inputs are defined so that the Rust test can rebuild them bit for bit without any resampling
library: a photo's centre square (rows/columns cut evenly from the longer side), averaged over
k x k pixel blocks down to the model's side, then mapped to [-1, 1] as x / 127.5 - 1.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[4]
ASSETS = ROOT / "assets"
# PNG only: JPEG decoders (libjpeg-turbo here, zune-jpeg in the project) differ by a grey level.
PHOTOS = ["astronaut.png", "faces/group_1927.png"]
MODELS = {"front": ("blazeface/face_detection_front_128x128.onnx", 128),
          "back": ("blazeface/face_detection_back_256x256.onnx", 256)}
TOP = 16


def model_input(path, side):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    h, w, _ = rgb.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = rgb[top:top + s, left:left + s]
    k = s // side
    square = square[: side * k, : side * k]
    small = square.reshape(side, k, side, k, 3).mean(axis=(1, 3), dtype=np.float32)
    return (small / np.float32(127.5) - np.float32(1.0))[None].astype(np.float32)


def main():
    out = {"_comment": f"onnxruntime {ort.__version__}, numpy {np.__version__}; "
                       "scores: raw logits of all 896 anchors (front 16x16x2 then 8x8x6); "
                       f"top: the {TOP} highest-scoring anchors with all 16 regressor values; "
                       "regressor_sum / regressor_abs_sum over all anchors"}
    for variant, (model, side) in MODELS.items():
        session = ort.InferenceSession(str(ASSETS / model), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for photo in PHOTOS:
            x = model_input(ASSETS / photo, side)
            res = dict(zip(names, session.run(None, {"input:0": x})))
            scores = np.concatenate([res["Identity:0"], res["Identity_1:0"]], axis=1)[0, :, 0]
            regs = np.concatenate([res["Identity_2:0"], res["Identity_3:0"]], axis=1)[0]
            top = np.argsort(-scores, kind="stable")[:TOP]
            out[f"{photo}/{variant}"] = {
                "input_sum": float(x.astype(np.float64).sum()),
                "scores": [round(float(v), 5) for v in scores],
                "top": [{"anchor": int(i), "regressors": [round(float(v), 5) for v in regs[i]]}
                        for i in top],
                "regressor_sum": float(regs.astype(np.float64).sum()),
                "regressor_abs_sum": float(np.abs(regs.astype(np.float64)).sum()),
            }
            print(photo, variant, "max score", scores.max(), file=sys.stderr)
    dest = Path(__file__).with_name("blazeface_onnxruntime.json")
    dest.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
