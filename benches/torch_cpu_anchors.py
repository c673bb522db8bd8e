"""PyTorch CPU and onnxruntime anchors for benches/compare_cpu.sh: the same networks, batch
sizes and steps as `cargo run --release --example throughput`, timed the same way (median of
ITERS iterations after two warm-up ones). Prints `images/s: X` last, like the example.

    python benches/torch_cpu_anchors.py WORKLOAD BATCH ENGINE [ITERS] [THREADS]

WORKLOAD: scratch3 | resnet50-frozen | mobilenetv2 | dcgan64 (input size implied: 128, 128,
224, 64; `resnet50` = 224 inference). ENGINE: torch-train | torch-infer | ort-infer.
Runs in a scratch venv (torch, torchvision, onnx, onnxruntime); never a project dependency.
With ANCHOR_DEVICE=cuda the torch engines run on GPU 0 (cudnn.benchmark on, each step ending
with a device synchronisation) for benches/gpu/run.sh; `resnet34` = 224 inference there;
ANCHOR_AMP=1 adds bf16 autocast around the forward passes and losses. ANCHOR_FREEZE_D=1 holds
dcgan64's discriminator weights out of autograd during the generator's step.
"""
import io
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision

workload, batch, engine = sys.argv[1], int(sys.argv[2]), sys.argv[3]
iters = int(sys.argv[4]) if len(sys.argv) > 4 else 5
threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
dev = torch.device(os.environ.get("ANCHOR_DEVICE", "cpu"))
if dev.type == "cuda":
    torch.backends.cudnn.benchmark = True
amp = os.environ.get("ANCHOR_AMP") == "1"


def autocast():
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)


def seed_head(features):
    """The attractiveness report's head (deeprecog_classifiers::SeedHead defaults)."""
    layers, cin = [], features
    for units in (512, 256, 128):
        layers += [nn.Linear(cin, units), nn.BatchNorm1d(units), nn.ReLU(), nn.Dropout(0.5)]
        cin = units
    return nn.Sequential(*layers, nn.Linear(cin, 1))


def scratch3():
    layers, cin = [], 3
    for out in (32, 64, 128):
        layers += [nn.Conv2d(cin, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        cin = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 16 * 16, 128), nn.ReLU(), nn.Linear(128, 1))


class Frozen(nn.Module):
    """ResNet50 with conv1..layer1 frozen (eval mode, no gradients) and the seed head."""

    def __init__(self):
        super().__init__()
        r = torchvision.models.resnet50(weights=None)
        self.frozen = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.rest = nn.Sequential(r.layer2, r.layer3, r.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = seed_head(2048)

    def train(self, mode=True):
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            x = self.frozen(x)
        return self.head(self.rest(x))


def mobilenetv2():
    m = torchvision.models.mobilenet_v2(weights=None)
    return nn.Sequential(m.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), seed_head(1280))


def resnet50():
    r = torchvision.models.resnet50(weights=None)
    r.fc = seed_head(2048)
    return r


def resnet34():
    r = torchvision.models.resnet34(weights=None)
    r.fc = seed_head(512)
    return r


def dcgan64():
    """pytorch/examples' DCGAN at 64x64 (nz 100, ngf = ndf = 64)."""
    g = nn.Sequential(
        nn.ConvTranspose2d(100, 512, 4, 1, 0, bias=False), nn.BatchNorm2d(512), nn.ReLU(True),
        nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(True),
        nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
        nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh())
    d = nn.Sequential(
        nn.Conv2d(3, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, True),
        nn.Conv2d(128, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.LeakyReLU(0.2, True),
        nn.Conv2d(256, 512, 4, 2, 1, bias=False), nn.BatchNorm2d(512), nn.LeakyReLU(0.2, True),
        nn.Conv2d(512, 1, 4, 1, 0, bias=False))
    return g, d


def median_seconds(step):
    times = []
    for i in range(iters + 2):
        t = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


models = {"scratch3": (scratch3, 128), "resnet50-frozen": (Frozen, 128),
          "mobilenetv2": (mobilenetv2, 224), "resnet50": (resnet50, 224),
          "resnet34": (resnet34, 224)}

if workload == "dcgan64":
    g, d = (m.to(dev) for m in dcgan64())
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    real = torch.randn(batch, 3, 64, 64, device=dev).tanh()
    # ANCHOR_FREEZE_D=1: no discriminator weight gradients in the generator's step (what
    # deeprecog's GanStep does; pytorch/examples computes and discards them).
    freeze_d = os.environ.get("ANCHOR_FREEZE_D") == "1"
    ones, zeros = torch.ones(batch, device=dev), torch.zeros(batch, device=dev)

    def step():
        with autocast():
            fake = g(torch.randn(batch, 100, 1, 1, device=dev))
            loss_d = bce(d(real).view(-1), ones) + bce(d(fake.detach()).view(-1), zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        d.requires_grad_(not freeze_d)
        with autocast():
            loss_g = bce(d(fake).view(-1), ones)
        loss_g.backward()
        d.requires_grad_(True)
        opt_g.step()
else:
    build, size = models[workload]
    model = build().to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    if engine == "torch-train":
        model.train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
        y = torch.ones(batch, 1, device=dev)
        bce = nn.BCEWithLogitsLoss()

        def step():
            opt.zero_grad()
            with autocast():
                loss = bce(model(x), y)
            loss.backward()
            opt.step()
    elif engine == "torch-infer":
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(x)
    elif engine == "ort-infer":
        import onnxruntime as ort

        model.eval()
        buf = io.BytesIO()
        torch.onnx.export(model, x, buf, input_names=["x"], output_names=["y"], dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}

        def step():
            session.run(None, feed)
    else:
        sys.exit(f"unknown engine {engine}")

median = median_seconds(step)
print(f"{workload} batch {batch} {engine}: median {median * 1e3:.1f} ms over {iters} iterations")
print(f"images/s: {batch / median:.2f}")
