"""PyTorch anchor for the DCGAN notes in benches/NOTES.md (a scratch venv, never a project
dependency: `python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy pillow`).

pytorch/examples' DCGAN generalised to any power-of-two size, trained on the fixture's first 700
CelebA-format faces (central square, bilinear resize), BCE with logits, Adam, the generator step
reusing the generated batch. Prints the losses every 25 iterations and the seconds per iteration
after two warm-up ones, then writes train- and eval-mode 6x6 mosaics of fixed noise.

    /tmp/torchvenv/bin/python benches/torch_dcgan.py ITERS SIZE NGF NDF LR_G LR_D BATCH TAG [THREADS]

e.g. `... 150 64 16 16 2e-4 2e-4 16 d64` (grey after 150 iterations), `... 300 32 32 32 2e-4 2e-4
16 d32` (faces), `... 8 64 64 64 2e-4 2e-4 16 speed 2` (the 0.41 s per iteration anchor).
"""
import glob
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

iters, S, ngf, ndf = (int(a) for a in sys.argv[1:5])
lrg, lrd = float(sys.argv[5]), float(sys.argv[6])
b, tag = int(sys.argv[7]), sys.argv[8]
torch.set_num_threads(int(sys.argv[9]) if len(sys.argv) > 9 else 1)
torch.manual_seed(0)
files = sorted(glob.glob("data-fixtures/celeba/img_align_celeba/*.jpg"))[:700]


def load(f):
    im = Image.open(f).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((S, S), Image.BILINEAR)
    return np.asarray(im, np.float32) / 127.5 - 1


X = torch.from_numpy(np.stack([load(f) for f in files])).permute(0, 3, 1, 2)
nz = 100
L = int(math.log2(S // 4))
g_layers, c, cin = [], ngf * 2 ** (L - 1), nz
for i in range(L):
    g_layers += [nn.ConvTranspose2d(cin, c, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
    cin, c = c, c // 2
G = nn.Sequential(*g_layers, nn.ConvTranspose2d(cin, 3, 4, 2, 1, bias=False), nn.Tanh())
d_layers, cin = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)], ndf
for i in range(1, L):
    d_layers += [nn.Conv2d(cin, cin * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(cin * 2), nn.LeakyReLU(0.2, True)]
    cin *= 2
D = nn.Sequential(*d_layers, nn.Conv2d(cin, 1, 4, 1, 0, bias=False))


def init(m):
    if "Conv" in type(m).__name__:
        nn.init.normal_(m.weight, 0, 0.02)
    if "BatchNorm" in type(m).__name__:
        nn.init.normal_(m.weight, 1, 0.02)
        nn.init.zeros_(m.bias)


G.apply(init)
D.apply(init)
oG = torch.optim.Adam(G.parameters(), lrg, betas=(0.5, 0.999))
oD = torch.optim.Adam(D.parameters(), lrd, betas=(0.5, 0.999))
bce = nn.BCEWithLogitsLoss()
fixed = torch.randn(36, nz, 1, 1)
t0 = None
for it in range(iters):
    if it == 2:
        t0 = time.time()
    real = X[torch.randint(0, len(X), (b,))]
    fake = G(torch.randn(b, nz, 1, 1))
    D.zero_grad()
    ld = bce(D(real).view(-1), torch.ones(b)) + bce(D(fake.detach()).view(-1), torch.zeros(b))
    ld.backward()
    oD.step()
    G.zero_grad()
    lg = bce(D(fake).view(-1), torch.ones(b))
    lg.backward()
    oG.step()
    if it % 25 == 0:
        print(it, ld.item(), lg.item(), flush=True)
if t0 is not None:
    print("s/iter", (time.time() - t0) / (iters - 2), flush=True)
with torch.no_grad():
    for mode, name in ((True, "train"), (False, "eval")):
        G.train(mode)
        y = ((G(fixed).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        grid = np.zeros((6 * (S + 2), 6 * (S + 2), 3), np.uint8)
        for i in range(36):
            r, c = divmod(i, 6)
            grid[r * (S + 2) + 1 : r * (S + 2) + 1 + S, c * (S + 2) + 1 : c * (S + 2) + 1 + S] = y[i]
        Image.fromarray(grid).save(f"/tmp/{tag}_{name}.png")
