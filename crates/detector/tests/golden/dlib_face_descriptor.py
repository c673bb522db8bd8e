"""Golden face descriptors for the candle port of dlib's face-recognition ResNet
(crates/detector/src/dlib.rs, tested by crates/detector/tests/dlib.rs).

Made with dlib-bin 20.0.1 (the PyPI wheel of dlib) and NumPy:

    python -m venv /tmp/dlibvenv && /tmp/dlibvenv/bin/pip install dlib-bin==20.0.1 numpy
    /tmp/dlibvenv/bin/python crates/detector/tests/golden/dlib_face_descriptor.py \
        assets/dlib/dlib_face_recognition_resnet_model_v1.dat

It runs `dlib.face_recognition_model_v1(dat).compute_face_descriptor(chip)` on two
deterministic 150x150 RGB chips (no face in them: the point is bit-for-bit arithmetic, not
recognition) and writes all 128 values of each descriptor to dlib_face_descriptor.json next
to this script:

    A: p[y, x, c] = (x*7 + y*3 + c*50) % 256
    B: p[y, x, c] = ((x*x + y*5 + c*31) * 3) % 256
"""

import json
import os
import sys

import dlib
import numpy as np


def chip(kind):
    y, x = np.mgrid[0:150, 0:150]
    if kind == "A":
        planes = [(x * 7 + y * 3 + c * 50) % 256 for c in range(3)]
    else:
        planes = [((x * x + y * 5 + c * 31) * 3) % 256 for c in range(3)]
    return np.ascontiguousarray(np.stack(planes, -1).astype(np.uint8))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    dat = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "../../../../assets/dlib/dlib_face_recognition_resnet_model_v1.dat")
    model = dlib.face_recognition_model_v1(dat)
    out = {"dlib_version": dlib.__version__}
    for kind in ["A", "B"]:
        out[kind] = [float(v) for v in model.compute_face_descriptor(chip(kind))]
    with open(os.path.join(here, "dlib_face_descriptor.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
