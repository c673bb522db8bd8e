#!/usr/bin/env python3
"""Real-PyTorch reference for deeprecog-nn's optimizers and LR schedules.

This is the second, independent golden beside optim_reference.py (a float64 NumPy transcription
of the PyTorch docs). Here nothing is transcribed: the trajectories come from torch.optim itself
(Adam, AdamW, SGD, RMSprop, NAdam) on a float64 parameter, and the learning rates from
torch.optim.lr_scheduler (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
SequentialLR(LinearLR, CosineAnnealingLR), ReduceLROnPlateau) driving a real optimizer.

Same theta0, same six gradients, same cases, same JSON layout as optim_golden.json, so
crates/nn/tests/optim_golden.rs and schedule_golden.rs check both files with one piece of code.
Keras' RMSprop (eps inside the square root) has no torch equivalent: its two cases stay
NumPy-only and are left out here.

For each step the gradient is assigned to p.grad by hand and opt.step() is called: no autograd.
The single-tensor ("for-loop") implementation (foreach=False) is recorded; the script also runs
every case with foreach=True and asserts the two agree to 1e-14, so the file does not depend on
which kernel torch picks by default.

Produced with torch 2.15.0 (CPU) and Python 3, from the repository root:
    /tmp/torchenv/bin/python crates/nn/tests/golden/optim_torch_reference.py \
        > crates/nn/tests/golden/optim_torch_golden.json
(any Python with torch installed works; the version used is recorded in the JSON's "_comment").
"""
import json
import sys

import torch

torch.set_default_dtype(torch.float64)

# Identical to optim_reference.py (the Rust test checks that the two files agree on them).
THETA0 = [0.5, -1.25, 2.0, 0.0, -0.3]
GRADS = [
    [0.1, -0.2, 0.3, 0.05, -1.0],
    [0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.1, 0.2, -0.3, -0.05, 1.0],
    [1.5, -2.0, 0.7, 0.25, -0.4],
    [1e-3, -1e-4, 2e-3, 0.0, 3e-3],
    [0.3, 0.3, -0.6, -0.9, 0.2],
]

# (name, kind, config as the Rust *Config structs spell it). Missing keys take the defaults, so
# an empty config also checks that the Rust defaults are torch's.
CASES = [
    ("adam_default", "adam", {}),
    ("adam_lr", "adam", {"lr": 0.1}),
    ("adam_l2_amsgrad", "adam", {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True}),
    ("adam_betas_eps", "adam", {"lr": 0.05, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3}),
    ("adamw_default", "adamw", {}),
    ("adamw_lr_wd", "adamw", {"lr": 0.1, "weight_decay": 0.5}),
    ("adamw_amsgrad", "adamw", {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True}),
    ("sgd_plain", "sgd", {"lr": 0.1}),
    ("sgd_momentum", "sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd_momentum_dampening_wd", "sgd",
     {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01}),
    ("sgd_nesterov_wd", "sgd",
     {"lr": 0.1, "momentum": 0.8, "weight_decay": 0.05, "nesterov": True}),
    ("rmsprop_default", "rmsprop", {}),
    ("rmsprop_momentum", "rmsprop", {"lr": 0.01, "momentum": 0.9}),
    ("rmsprop_centered_momentum_wd", "rmsprop",
     {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("nadam_default", "nadam", {}),
    ("nadam_lr", "nadam", {"lr": 0.1}),
    ("nadam_l2", "nadam", {"lr": 0.1, "weight_decay": 0.1}),
    ("nadam_decoupled_psi", "nadam",
     {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True, "momentum_decay": 0.5}),
]

# The Rust SGD default learning rate (torch's SGD has lr=1e-3 as well since 2.2).
SGD_DEFAULT_LR = 1e-3


def make_optimizer(kind, config, params, foreach):
    c = dict(config)
    if kind in ("adam", "adamw", "nadam"):
        if "beta1" in c or "beta2" in c:
            c["betas"] = (c.pop("beta1", 0.9), c.pop("beta2", 0.999))
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "nadam": torch.optim.NAdam}[kind]
        return cls(params, foreach=foreach, **c)
    if kind == "sgd":
        c.setdefault("lr", SGD_DEFAULT_LR)
        return torch.optim.SGD(params, foreach=foreach, **c)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, foreach=foreach, **c)
    raise ValueError(kind)


def trajectory(kind, config, foreach):
    p = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    opt = make_optimizer(kind, config, [p], foreach)
    out = []
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().clone().tolist())
    return out


def optimizer_cases():
    cases = []
    for name, kind, config in CASES:
        single = trajectory(kind, config, foreach=False)
        multi = trajectory(kind, config, foreach=True)
        diff = max(abs(a - b) for sa, sb in zip(single, multi) for a, b in zip(sa, sb))
        assert diff < 1e-14, (name, diff)
        cases.append({"name": name, "kind": kind, "config": config, "params_after_step": single})
    return cases


# ---- schedules: lr held by the optimizer after e calls to scheduler.step() -------------------
N_EPOCHS = 25


def dummy_optimizer(lr):
    p = torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([p], lr=lr)


def run_epoch_schedule(opt, sched):
    out = []
    for _ in range(N_EPOCHS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def step_lr(base, step_size, gamma):
    opt = dummy_optimizer(base)
    return run_epoch_schedule(opt, torch.optim.lr_scheduler.StepLR(opt, step_size, gamma))


def multistep_lr(base, milestones, gamma):
    opt = dummy_optimizer(base)
    return run_epoch_schedule(opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma))


def exponential_lr(base, gamma):
    opt = dummy_optimizer(base)
    return run_epoch_schedule(opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma))


def cosine_lr(base, t_max, eta_min):
    opt = dummy_optimizer(base)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    return run_epoch_schedule(opt, sched)


def warmup_cosine(base, warmup, start_factor, t_max, eta_min):
    opt = dummy_optimizer(base)
    lin = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start_factor, end_factor=1.0,
                                            total_iters=warmup)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [lin, cos], milestones=[warmup])
    return run_epoch_schedule(opt, sched)


def plateau(lr, metrics, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr):
    opt = dummy_optimizer(lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=factor, patience=patience, threshold=threshold,
        threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr, eps=1e-8)
    out = []
    for m in metrics:
        opt.step()
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


LOSSES = [1.0, 0.9, 0.9, 0.8999, 0.91, 0.95, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69995,
          0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
ACCS = [0.5, 0.6, 0.6, 0.61, 0.61, 0.605, 0.7, 0.7, 0.7, 0.7, 0.7, 0.75, 0.75, 0.75, 0.75, 0.75]


def schedules():
    return [
        {"name": "step", "kind": "step", "params": {"base_lr": 0.1, "step_size": 3, "gamma": 0.5},
         "lrs": step_lr(0.1, 3, 0.5)},
        {"name": "multistep", "kind": "multistep",
         "params": {"base_lr": 0.1, "milestones": [2, 5, 5, 11], "gamma": 0.1},
         "lrs": multistep_lr(0.1, [2, 5, 5, 11], 0.1)},
        {"name": "exponential", "kind": "exponential", "params": {"base_lr": 0.01, "gamma": 0.9},
         "lrs": exponential_lr(0.01, 0.9)},
        {"name": "cosine", "kind": "cosine",
         "params": {"base_lr": 0.1, "t_max": 10, "eta_min": 1e-3},
         "lrs": cosine_lr(0.1, 10, 1e-3)},
        {"name": "warmup_cosine", "kind": "warmup_cosine",
         "params": {"base_lr": 0.1, "warmup": 4, "start_factor": 0.25, "t_max": 15,
                    "eta_min": 0.0},
         "lrs": warmup_cosine(0.1, 4, 0.25, 15, 0.0)},
        {"name": "plateau_min", "kind": "plateau",
         "params": {"initial_lr": 0.1, "mode": "min", "factor": 0.5, "patience": 2,
                    "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 1, "min_lr": 0.02},
         "metrics": LOSSES,
         "lrs": plateau(0.1, LOSSES, "min", 0.5, 2, 1e-4, "rel", 1, 0.02)},
        {"name": "plateau_max_abs", "kind": "plateau",
         "params": {"initial_lr": 1.0, "mode": "max", "factor": 0.1, "patience": 1,
                    "threshold": 0.01, "threshold_mode": "abs", "cooldown": 0, "min_lr": 0.0},
         "metrics": ACCS,
         "lrs": plateau(1.0, ACCS, "max", 0.1, 1, 0.01, "abs", 0, 0.0)},
    ]


def main():
    import warnings

    # SequentialLR passes an epoch to CosineAnnealingLR.step(), which torch flags as deprecated.
    warnings.simplefilter("ignore")
    doc = {
        "_comment": (f"Generated by optim_torch_reference.py with torch {torch.__version__} "
                     "(torch.optim / lr_scheduler, float64, foreach=False); do not edit."),
        "theta0": THETA0,
        "grads": GRADS,
        "optimizers": optimizer_cases(),
        "schedules": schedules(),
    }
    json.dump(doc, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
