"""onnxruntime's time for MediaPipe BlazeFace on one 640x360 frame, the reference for the
criterion bench `faces` (benches/faces.rs). Run by benches/compare_blazeface.sh.

Times two things per frame, median over repeated runs, with onnxruntime limited to the given
number of threads: the model alone (`session.run` on a prepared 1x128x128x3 input), and the
whole detection (letterbox resize with PIL, [-1, 1] scaling, `session.run`, sigmoid, anchor
decoding and a weighted suppression in numpy), which is what `BlazeFace::detect` does.
"""
import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from PIL import Image


def anchors():
    out = []
    for grid, per in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                out += [((x + 0.5) / grid, (y + 0.5) / grid)] * per
    return np.array(out, dtype=np.float32)


def detect(session, frame, side, anchor, threshold=0.5, iou=0.3):
    w, h = frame.size
    scale = side / max(w, h)
    small = frame.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    canvas = np.zeros((side, side, 3), dtype=np.float32)
    sw, sh = small.size
    dx, dy = (side - sw) // 2, (side - sh) // 2
    canvas[dy:dy + sh, dx:dx + sw] = np.asarray(small, dtype=np.float32) / 127.5 - 1.0
    outs = session.run(None, {"input:0": canvas[None]})
    scores = np.concatenate([outs[0], outs[1]], axis=1)[0, :, 0]
    regs = np.concatenate([outs[2], outs[3]], axis=1)[0]
    prob = 1.0 / (1.0 + np.exp(-np.clip(scores, -100, 100)))
    keep = np.nonzero(prob >= threshold)[0]
    boxes = regs[keep, :4] / side
    boxes[:, :2] += anchor[keep]
    order = np.argsort(-prob[keep])
    faces = []
    while order.size:
        best = order[0]
        b = boxes[best]
        x1 = np.maximum(b[0] - b[2] / 2, boxes[order, 0] - boxes[order, 2] / 2)
        x2 = np.minimum(b[0] + b[2] / 2, boxes[order, 0] + boxes[order, 2] / 2)
        y1 = np.maximum(b[1] - b[3] / 2, boxes[order, 1] - boxes[order, 3] / 2)
        y2 = np.minimum(b[1] + b[3] / 2, boxes[order, 1] + boxes[order, 3] / 2)
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        union = b[2] * b[3] + boxes[order, 2] * boxes[order, 3] - inter
        cluster = order[inter / union > iou]
        weights = prob[keep][cluster]
        faces.append((boxes[cluster] * weights[:, None]).sum(0) / weights.sum())
        order = order[inter / union <= iou]
    return faces


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("frame", help="a 640x360 RGB image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    side = session.get_inputs()[0].shape[1]
    frame = Image.open(args.frame).convert("RGB")
    anchor = anchors()
    x = np.random.default_rng(0).uniform(-1, 1, (1, side, side, 3)).astype(np.float32)
    for label, fn in (("model only", lambda: session.run(None, {"input:0": x})),
                      ("whole detection", lambda: detect(session, frame, side, anchor))):
        for _ in range(20):
            fn()
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        print(f"onnxruntime {ort.__version__} {args.threads} threads, {side}x{side}, {label}: "
              f"median {statistics.median(times) * 1e3:.3f} ms per 640x360 frame")
    print(f"faces found in the frame: {len(detect(session, frame, side, anchor))}")


if __name__ == "__main__":
    main()
