"""Reference outputs of the GAN networks, from PyTorch, for tests/golden.rs.

DCGAN is pytorch/examples' dcgan/main.py Generator and Discriminator, verbatim in structure
(nn.Sequential indices give the parameter names), at nz=16, ngf=ndf=8, 64x64. The seed GAN is
the synthesis report's Keras model (Chollet's GAN) written in PyTorch: Dense -> LeakyReLU(0.3)
-> reshape to (C, H, W) -> Conv 5x5 'same' -> ConvTranspose 4x4 stride 2 'same' -> 2 x Conv
5x5 -> Conv 7x7 tanh; Conv 3x3 'valid' + 3 x Conv 4x4 stride 2 'valid', LeakyReLU(0.3),
Flatten, Dropout, Dense (logit). Widths 8/8 at 32x32.

Weights are not random: every parameter and buffer, in sorted-name order, is filled from a
formula the Rust test repeats, so no weight file is committed.

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy
    /tmp/torchvenv/bin/python crates/gan/tests/golden/reference.py > crates/gan/tests/golden/reference.json

(torch 2.15.0, numpy 2.4.6, CPU.)
"""
import json
import math

import numpy as np
import torch
import torch.nn as nn

torch.set_num_threads(1)


def fill(name, n):
    # The same formula as golden.rs's `fill`: f64 arithmetic, rounded to f32.
    k = sum(ord(c) for c in name) % 97
    i = np.arange(n, dtype=np.float64)
    v = 0.05 * np.sin(0.37 * i + 0.11 * k)
    if name.endswith("running_var"):
        v = 1.0 + 10.0 * v * v
    return v.astype(np.float32)


def set_weights(module):
    sd = module.state_dict()
    for name in sorted(sd):
        t = sd[name]
        if name.endswith("num_batches_tracked"):
            continue
        t.copy_(torch.from_numpy(fill(name, t.numel())).reshape(t.shape))


def wave(n, a, b):
    i = np.arange(n, dtype=np.float64)
    return (b * np.sin(a * i)).astype(np.float32)


class Generator(nn.Module):
    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.main(x)


class Discriminator(nn.Module):
    def __init__(self, nc, ndf):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        # Logits: the project's losses take them (BCEWithLogits).
        return self.main[:-1](x).view(-1)


class SeedGenerator(nn.Module):
    def __init__(self, latent, width, size, nc):
        super().__init__()
        self.half, self.ch = size // 2, width // 2
        self.dense = nn.Linear(latent, self.ch * self.half * self.half)
        self.conv1 = nn.Conv2d(self.ch, width, 5, padding=2)
        self.deconv = nn.ConvTranspose2d(width, width, 4, 2, 1)
        self.conv2 = nn.Conv2d(width, width, 5, padding=2)
        self.conv3 = nn.Conv2d(width, width, 5, padding=2)
        self.out = nn.Conv2d(width, nc, 7, padding=3)

    def forward(self, z):
        a = lambda t: nn.functional.leaky_relu(t, 0.3)
        x = a(self.dense(z)).view(-1, self.ch, self.half, self.half)
        x = a(self.conv1(x))
        x = a(self.deconv(x))
        x = a(self.conv2(x))
        x = a(self.conv3(x))
        return torch.tanh(self.out(x))


class SeedDiscriminator(nn.Module):
    def __init__(self, nc, width, size):
        super().__init__()
        self.conv1 = nn.Conv2d(nc, width, 3)
        self.conv2 = nn.Conv2d(width, width, 4, 2)
        self.conv3 = nn.Conv2d(width, width, 4, 2)
        self.conv4 = nn.Conv2d(width, width, 4, 2)
        side = size - 2
        for _ in range(3):
            side = (side - 4) // 2 + 1
        self.dense = nn.Linear(width * side * side, 1)

    def forward(self, x):
        a = lambda t: nn.functional.leaky_relu(t, 0.3)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = a(conv(x))
        return self.dense(x.flatten(1)).view(-1)


def summary(t):
    v = t.detach().double().flatten().numpy()
    return {"shape": list(t.shape), "sum": float(v.sum()), "abs_sum": float(np.abs(v).sum()), "head": [float(x) for x in v[:8]]}


out = {}
nz, ngf, ndf, n = 16, 8, 8, 4
z = torch.from_numpy(wave(n * nz, 0.7, 1.0)).reshape(n, nz, 1, 1)
x = torch.from_numpy(wave(n * 3 * 64 * 64, 0.013, 0.9)).reshape(n, 3, 64, 64)
for mode in ("eval", "train"):
    g, d = Generator(nz, ngf, 3), Discriminator(3, ndf)
    set_weights(g)
    set_weights(d)
    g.train(mode == "train")
    d.train(mode == "train")
    with torch.no_grad():
        out[f"dcgan_g_{mode}"] = summary(g(z))
        out[f"dcgan_d_{mode}"] = summary(d(x))
        if mode == "train":
            out["dcgan_g_running_mean_after"] = summary(g.main[1].running_mean)

g, d = SeedGenerator(16, 8, 32, 3), SeedDiscriminator(3, 8, 32)
set_weights(g)
set_weights(d)
zs = torch.from_numpy(wave(n * 16, 0.7, 1.0)).reshape(n, 16)
xs = torch.from_numpy(wave(n * 3 * 32 * 32, 0.013, 0.9)).reshape(n, 3, 32, 32)
with torch.no_grad():
    out["seed_g"] = summary(g(zs))
    out["seed_d"] = summary(d(xs))
out["versions"] = {"torch": torch.__version__, "numpy": np.__version__}
print(json.dumps(out, indent=1))
