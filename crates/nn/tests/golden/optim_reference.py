#!/usr/bin/env python3
"""Independent float64 NumPy reference for deeprecog-nn's optimizers and LR schedules.

Each algorithm is written straight from the pseudocode in the PyTorch documentation
(torch.optim.Adam, AdamW, SGD, RMSprop, NAdam and torch.optim.lr_scheduler.*), plus Keras 3's
RMSprop (keras/src/optimizers/rmsprop.py: epsilon inside the square root). Where PyTorch's
implementation (torch/optim/adam.py) and some versions of the doc pseudocode differ (AMSGrad keeps
the max of the *raw* second moment and bias-corrects it afterwards), the implementation is followed.

Regenerate (from the repository root):
    python3 crates/nn/tests/golden/optim_reference.py > crates/nn/tests/golden/optim_golden.json
"""
import json
import math

import numpy as np

THETA0 = np.array([0.5, -1.25, 2.0, 0.0, -0.3], dtype=np.float64)
# Six gradients: ordinary, a zero gradient, a sign flip of the first, larger, tiny, mixed.
GRADS = np.array(
    [
        [0.1, -0.2, 0.3, 0.05, -1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [-0.1, 0.2, -0.3, -0.05, 1.0],
        [1.5, -2.0, 0.7, 0.25, -0.4],
        [1e-3, -1e-4, 2e-3, 0.0, 3e-3],
        [0.3, 0.3, -0.6, -0.9, 0.2],
    ],
    dtype=np.float64,
)


def adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    theta = THETA0.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    vmax = np.zeros_like(theta)
    out = []
    for t, g in enumerate(GRADS, start=1):
        g = g.copy()
        if weight_decay != 0.0:
            if decoupled:
                theta = theta - lr * weight_decay * theta
            else:
                g = g + weight_decay * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1**t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            vhat = vmax / (1 - b2**t)
        else:
            vhat = v / (1 - b2**t)
        theta = theta - lr * mhat / (np.sqrt(vhat) + eps)
        out.append(theta.tolist())
    return out


def sgd(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    theta = THETA0.copy()
    b = None
    out = []
    for t, g in enumerate(GRADS, start=1):
        g = g.copy()
        if weight_decay != 0.0:
            g = g + weight_decay * theta
        if momentum != 0.0:
            if t > 1:
                b = momentum * b + (1 - dampening) * g
            else:
                b = g.copy()
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        theta = theta - lr * g
        out.append(theta.tolist())
    return out


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            eps_inside_sqrt=False):
    theta = THETA0.copy()
    v = np.zeros_like(theta)
    gave = np.zeros_like(theta)
    b = np.zeros_like(theta)
    out = []
    for g in GRADS:
        g = g.copy()
        if weight_decay != 0.0:
            g = g + weight_decay * theta
        v = alpha * v + (1 - alpha) * g * g
        vt = v
        if centered:
            gave = alpha * gave + (1 - alpha) * g
            vt = vt - gave * gave
        if eps_inside_sqrt:  # Keras: lr * g / sqrt(v + eps)
            denom = np.sqrt(vt + eps)
        else:  # PyTorch: g / (sqrt(v) + eps)
            denom = np.sqrt(vt) + eps
        if momentum > 0:
            b = momentum * b + g / denom
            theta = theta - lr * b
        else:
            theta = theta - lr * g / denom
        out.append(theta.tolist())
    return out


def nadam(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False):
    b1, b2 = betas
    theta = THETA0.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    mus = []  # mu_1 .. mu_t
    out = []
    for t, g in enumerate(GRADS, start=1):
        g = g.copy()
        if weight_decay != 0.0:
            if decoupled_weight_decay:
                theta = theta - lr * weight_decay * theta
            else:
                g = g + weight_decay * theta
        mu_t = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_t1 = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mus.append(mu_t)
        prod_t = float(np.prod(mus))
        prod_t1 = prod_t * mu_t1
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = mu_t1 * m / (1 - prod_t1) + (1 - mu_t) * g / (1 - prod_t)
        vhat = v / (1 - b2**t)
        theta = theta - lr * mhat / (np.sqrt(vhat) + eps)
        out.append(theta.tolist())
    return out


CASES = [
    ("adam_default", "adam", {}, adam()),
    ("adam_lr", "adam", {"lr": 0.1}, adam(lr=0.1)),
    ("adam_l2_amsgrad", "adam", {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True},
     adam(lr=0.1, weight_decay=0.1, amsgrad=True)),
    ("adam_betas_eps", "adam", {"lr": 0.05, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3},
     adam(lr=0.05, betas=(0.5, 0.9), eps=1e-3)),
    ("adamw_default", "adamw", {}, adam(weight_decay=1e-2, decoupled=True)),
    ("adamw_lr_wd", "adamw", {"lr": 0.1, "weight_decay": 0.5},
     adam(lr=0.1, weight_decay=0.5, decoupled=True)),
    ("adamw_amsgrad", "adamw", {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True},
     adam(lr=0.1, weight_decay=0.1, amsgrad=True, decoupled=True)),
    ("sgd_plain", "sgd", {"lr": 0.1}, sgd(lr=0.1)),
    ("sgd_momentum", "sgd", {"lr": 0.1, "momentum": 0.9}, sgd(lr=0.1, momentum=0.9)),
    ("sgd_momentum_dampening_wd", "sgd",
     {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
     sgd(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov_wd", "sgd", {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.05, "nesterov": True},
     sgd(lr=0.1, momentum=0.8, weight_decay=0.05, nesterov=True)),
    ("rmsprop_default", "rmsprop", {}, rmsprop()),
    ("rmsprop_momentum", "rmsprop", {"lr": 0.01, "momentum": 0.9}, rmsprop(lr=0.01, momentum=0.9)),
    ("rmsprop_centered_momentum_wd", "rmsprop",
     {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
     rmsprop(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("rmsprop_keras", "rmsprop",
     {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "eps_inside_sqrt": True},
     rmsprop(lr=1e-3, alpha=0.9, eps=1e-7, eps_inside_sqrt=True)),
    ("rmsprop_keras_centered", "rmsprop",
     {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "eps_inside_sqrt": True, "centered": True},
     rmsprop(lr=1e-3, alpha=0.9, eps=1e-7, eps_inside_sqrt=True, centered=True)),
    ("nadam_default", "nadam", {}, nadam()),
    ("nadam_lr", "nadam", {"lr": 0.1}, nadam(lr=0.1)),
    ("nadam_l2", "nadam", {"lr": 0.1, "weight_decay": 0.1}, nadam(lr=0.1, weight_decay=0.1)),
    ("nadam_decoupled_psi", "nadam",
     {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True, "momentum_decay": 0.5},
     nadam(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.5)),
]


# ---- schedules (torch.optim.lr_scheduler closed forms / ReduceLROnPlateau algorithm) ----
N_EPOCHS = 25


def step_lr(base, step_size, gamma):
    return [base * gamma ** (e // step_size) for e in range(N_EPOCHS)]


def multistep_lr(base, milestones, gamma):
    return [base * gamma ** sum(1 for m in milestones if m <= e) for e in range(N_EPOCHS)]


def exponential_lr(base, gamma):
    return [base * gamma**e for e in range(N_EPOCHS)]


def cosine_lr(base, t_max, eta_min):
    # Also checked against the recursive form PyTorch's get_lr() uses, epoch by epoch.
    closed = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2
              for e in range(N_EPOCHS)]
    lr = base
    for e in range(1, N_EPOCHS):
        if (e - 1 - t_max) % (2 * t_max) == 0:
            lr = lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        else:
            lr = ((1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max))
                  * (lr - eta_min) + eta_min)
        assert abs(lr - closed[e]) < 1e-12, (e, lr, closed[e])
    return closed


def warmup_cosine(base, warmup, start_factor, t_max, eta_min):
    out = []
    for e in range(N_EPOCHS):
        if e < warmup:  # LinearLR(start_factor, 1.0, total_iters=warmup)
            out.append(base * (start_factor + (1 - start_factor) * e / warmup))
        else:  # SequentialLR hands over to the cosine, restarted at 0
            k = e - warmup
            out.append(eta_min + (base - eta_min) * (1 + math.cos(math.pi * k / t_max)) / 2)
    return out


def plateau(lr, metrics, mode="min", factor=0.1, patience=10, threshold=1e-4,
            threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
    best = math.inf if mode == "min" else -math.inf
    bad = 0
    cool = 0
    out = []
    for a in metrics:
        if mode == "min" and threshold_mode == "rel":
            better = a < best * (1 - threshold)
        elif mode == "min":
            better = a < best - threshold
        elif threshold_mode == "rel":
            better = a > best * (threshold + 1)
        else:
            better = a > best + threshold
        if better:
            best = a
            bad = 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > eps:
                lr = new
            cool = cooldown
            bad = 0
        out.append(lr)
    return out


LOSSES = [1.0, 0.9, 0.9, 0.8999, 0.91, 0.95, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69995,
          0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
ACCS = [0.5, 0.6, 0.6, 0.61, 0.61, 0.605, 0.7, 0.7, 0.7, 0.7, 0.7, 0.75, 0.75, 0.75, 0.75, 0.75]

SCHEDULES = [
    {"name": "step", "kind": "step", "params": {"base_lr": 0.1, "step_size": 3, "gamma": 0.5},
     "lrs": step_lr(0.1, 3, 0.5)},
    {"name": "multistep", "kind": "multistep",
     "params": {"base_lr": 0.1, "milestones": [2, 5, 5, 11], "gamma": 0.1},
     "lrs": multistep_lr(0.1, [2, 5, 5, 11], 0.1)},
    {"name": "exponential", "kind": "exponential", "params": {"base_lr": 0.01, "gamma": 0.9},
     "lrs": exponential_lr(0.01, 0.9)},
    {"name": "cosine", "kind": "cosine", "params": {"base_lr": 0.1, "t_max": 10, "eta_min": 1e-3},
     "lrs": cosine_lr(0.1, 10, 1e-3)},
    {"name": "warmup_cosine", "kind": "warmup_cosine",
     "params": {"base_lr": 0.1, "warmup": 4, "start_factor": 0.25, "t_max": 15, "eta_min": 0.0},
     "lrs": warmup_cosine(0.1, 4, 0.25, 15, 0.0)},
    {"name": "plateau_min", "kind": "plateau",
     "params": {"initial_lr": 0.1, "mode": "min", "factor": 0.5, "patience": 2, "threshold": 1e-4,
                "threshold_mode": "rel", "cooldown": 1, "min_lr": 0.02},
     "metrics": LOSSES,
     "lrs": plateau(0.1, LOSSES, "min", 0.5, 2, 1e-4, "rel", 1, 0.02)},
    {"name": "plateau_max_abs", "kind": "plateau",
     "params": {"initial_lr": 1.0, "mode": "max", "factor": 0.1, "patience": 1, "threshold": 0.01,
                "threshold_mode": "abs", "cooldown": 0, "min_lr": 0.0},
     "metrics": ACCS,
     "lrs": plateau(1.0, ACCS, "max", 0.1, 1, 0.01, "abs", 0, 0.0)},
]


def main():
    doc = {
        "_comment": "Generated by optim_reference.py (float64 NumPy from the PyTorch docs); do not edit.",
        "theta0": THETA0.tolist(),
        "grads": GRADS.tolist(),
        "optimizers": [
            {"name": n, "kind": k, "config": c, "params_after_step": traj}
            for n, k, c, traj in CASES
        ],
        "schedules": SCHEDULES,
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
