#!/usr/bin/env python3
"""Real-PyTorch reference values for deeprecog_nn::loss, for crates/nn/tests/loss_golden.rs.

Every value is computed by torch itself in float64 on the CPU:
  bce            F.binary_cross_entropy_with_logits(x, t, reduction="none" and "mean"):
                 bce_with_logits_elementwise / bce_with_logits
  weighted_bce   weighted_bce_with_logits(x, t, neg_weight, pos_weight) weighs each element by
                 neg_weight + (pos_weight - neg_weight) * t (soft targets interpolate) and takes
                 the plain mean. That is torch's per-element `weight=` argument with that weight
                 tensor, which is what is recorded ("weight" cases). torch's `pos_weight=` only
                 scales the t * log(sigmoid(x)) term, so it coincides with ours for hard 0/1
                 targets and neg_weight = 1; those cases ("pos_weight") are recorded too.
  focal          torchvision.ops.sigmoid_focal_loss(x, t, alpha, gamma, reduction="mean"):
                 focal_loss_with_logits(x, t, alpha, gamma) (alpha < 0 disables the weighting)
  cross_entropy  F.cross_entropy(logits (N, C), classes (N,)) (mean): loss::cross_entropy
  mse            F.mse_loss(p, t) (mean): loss::mse
The logits include +-60 and +-1000 on both sides of the target, where a naive
log(sigmoid(x)) overflows.

Each mean also carries "grad": torch autograd's gradient of the mean loss with respect to the
logits (predictions for mse), flattened row-major. Where torch's own gradient is not finite
(sigmoid_focal_loss with 0 < gamma < 1 at a saturated, correct prediction: 0 * inf in pow's
backward) the entry is null and the Rust test skips it. "grad_f32_nonfinite" lists the entries
where the same torch computation in float32 has a non-finite gradient (in f32 the sigmoid
saturates to exactly 1 from |x| ~ 16.6 on, so that happens at |x| = 17 already); the Rust f32
test skips those.

Produced with torch 2.15.0 and torchvision 0.29.2 (CPU) from the repository root:
    /tmp/torchenv/bin/python crates/nn/tests/golden/loss_torch_reference.py \
        > crates/nn/tests/golden/loss_torch_golden.json
"""
import json
import math
import sys

import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import sigmoid_focal_loss

D = torch.float64


def t64(v):
    return torch.tensor(v, dtype=D)


def value_and_grad(f, x, *rest):
    """f(x, *rest) as a float, d f / d x (flattened, None where not finite), and the indices
    where the same computation in float32 gives a non-finite gradient."""
    xs = t64(x).requires_grad_(True)
    y = f(xs, *rest)
    y.backward()
    grad = [v if math.isfinite(v) else None for v in xs.grad.reshape(-1).tolist()]
    x32 = torch.tensor(x, dtype=torch.float32).requires_grad_(True)
    rest32 = [r.float() if r.is_floating_point() else r for r in rest]
    f(x32, *rest32).backward()
    bad32 = [i for i, v in enumerate(x32.grad.reshape(-1).tolist()) if not math.isfinite(v)]
    return y.item(), grad, bad32


# Logits and targets: the ordinary range, exact zeros, soft targets and the far tails.
X = [-1000.0, -60.0, -17.0, -3.0, -0.5, 0.0, 0.3, 2.5, 17.0, 60.0, 1000.0, 1000.0, -1000.0,
     60.0, -60.0, 4.0]
T_HARD = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
T_SOFT = [0.9, 0.1, 0.0, 0.3, 1.0, 0.5, 0.25, 0.7, 1.0, 0.05, 1.0, 0.5, 0.0, 0.95, 0.2, 0.0]
# Only moderate logits (every element is individually well within f32's range).
X_SMALL = [-4.0, -1.5, -0.2, 0.0, 0.7, 2.0, 3.5, -2.5]
T_SMALL = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def bce_cases():
    out = []
    for name, x, t in [("hard_extreme", X, T_HARD), ("soft_extreme", X, T_SOFT),
                       ("hard_small", X_SMALL, T_SMALL)]:
        xs, ts = t64(x), t64(t)
        out.append({
            "name": name, "logits": x, "targets": t,
            "elementwise": F.binary_cross_entropy_with_logits(xs, ts, reduction="none").tolist(),
        })
        (out[-1]["mean"], out[-1]["grad"],
         out[-1]["grad_f32_nonfinite"]) = value_and_grad(F.binary_cross_entropy_with_logits, x, ts)
    return out


def weighted_cases():
    out = []
    for name, x, t, neg, pos in [("weight_hard", X, T_HARD, 0.5, 2.0),
                                 ("weight_soft", X, T_SOFT, 0.3, 4.0),
                                 ("weight_small", X_SMALL, T_SMALL, 1.7, 0.2)]:
        xs, ts = t64(x), t64(t)
        w = neg + (pos - neg) * ts
        mean, grad, bad32 = value_and_grad(
            lambda a, b, c: F.binary_cross_entropy_with_logits(a, b, weight=c), x, ts, w)
        out.append({"name": name, "logits": x, "targets": t, "neg_weight": neg,
                    "pos_weight": pos, "torch_call": "weight=neg+(pos-neg)*t",
                    "mean": mean, "grad": grad, "grad_f32_nonfinite": bad32})
    for name, x, t, pos in [("pos_weight_hard", X, T_HARD, 3.0),
                            ("pos_weight_small", X_SMALL, T_SMALL, 0.25)]:
        xs, ts = t64(x), t64(t)
        mean, grad, bad32 = value_and_grad(
            lambda a, b, c: F.binary_cross_entropy_with_logits(a, b, pos_weight=c),
            x, ts, t64([pos]))
        out.append({"name": name, "logits": x, "targets": t, "neg_weight": 1.0,
                    "pos_weight": pos, "torch_call": "pos_weight=pos",
                    "mean": mean, "grad": grad, "grad_f32_nonfinite": bad32})
    return out


def focal_cases():
    out = []
    for x, t, xname in [(X, T_HARD, "hard_extreme"), (X_SMALL, T_SMALL, "hard_small"),
                        (X, T_SOFT, "soft_extreme")]:
        for alpha, gamma in [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5), (0.75, 0.5), (-1.0, 3.0)]:
            mean, grad, bad32 = value_and_grad(
                lambda a, b: sigmoid_focal_loss(a, b, alpha=alpha, gamma=gamma,
                                                reduction="mean"), x, t64(t))
            out.append({"name": f"{xname}_a{alpha}_g{gamma}", "logits": x, "targets": t,
                        "alpha": alpha, "gamma": gamma, "mean": mean, "grad": grad,
                        "grad_f32_nonfinite": bad32})
    return out


def ce_cases():
    cases = [
        ("ordinary", [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [-1.0, 4.0, 2.0]],
         [0, 2, 1, 1]),
        ("extreme", [[-100.0, 100.0, 0.0], [1000.0, -1000.0, 0.0], [1000.0, 999.0, 998.0],
                     [-1000.0, -1000.0, -1000.0], [60.0, -60.0, 30.0]],
         [0, 0, 2, 1, 0]),
        ("five_classes", [[0.3, -0.7, 1.1, 2.2, -1.9], [5.0, 4.9, 0.0, -3.0, 1.0]], [4, 1]),
    ]
    out = []
    for name, logits, classes in cases:
        loss, grad, bad32 = value_and_grad(
            F.cross_entropy, logits, torch.tensor(classes, dtype=torch.int64))
        out.append({"name": name, "logits": logits, "targets": classes, "mean": loss,
                    "grad": grad, "grad_f32_nonfinite": bad32})
    return out


def mse_cases():
    cases = [
        ("probabilities", [0.1, 0.9, 0.5, 0.0, 1.0, 0.33], [0.0, 1.0, 1.0, 0.0, 0.0, 0.3]),
        ("wide", [-3.5, 1e3, 2.25, -1e-3], [4.0, -1e3, 2.25, 1e-3]),
    ]
    out = []
    for n, p, t in cases:
        mean, grad, bad32 = value_and_grad(F.mse_loss, p, t64(t))
        out.append({"name": n, "predictions": p, "targets": t, "mean": mean, "grad": grad,
                    "grad_f32_nonfinite": bad32})
    return out


def main():
    doc = {
        "_comment": (f"Generated by loss_torch_reference.py with torch {torch.__version__}, "
                     f"torchvision {torchvision.__version__} (float64 CPU); do not edit."),
        "bce": bce_cases(),
        "weighted_bce": weighted_cases(),
        "focal": focal_cases(),
        "cross_entropy": ce_cases(),
        "mse": mse_cases(),
    }
    json.dump(doc, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
