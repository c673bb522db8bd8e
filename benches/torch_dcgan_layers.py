"""PyTorch CPU anchor for `cargo run --release -p deeprecog-nn --example dcgan_layers`: each
convolution of pytorch/examples' DCGAN at 64x64 (nz 100, ngf = ndf = 64) at batch 64, timed
forward, input gradient and weight gradient (`torch.nn.grad`, the kernels autograd runs) (median of ITERS timings, 15 by default, after two
warm-up ones), on THREADS threads. Runs in the scratch venv of benches/compare_cpu.sh (torch);
never a project dependency.

    target/bench-venv-torch/bin/python benches/torch_dcgan_layers.py [ITERS] [THREADS] [BATCH]

Prints one line per layer: milliseconds per pass and the direct convolution's GFLOP/s.
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 15
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
torch.set_num_threads(threads)
torch.manual_seed(0)

# (name, transposed, in channels, out channels, input side, stride, padding); kernel 4.
LAYERS = [
    ("D conv1 3->64", False, 3, 64, 64, 2, 1),
    ("D conv2 64->128", False, 64, 128, 32, 2, 1),
    ("D conv3 128->256", False, 128, 256, 16, 2, 1),
    ("D conv4 256->512", False, 256, 512, 8, 2, 1),
    ("D conv5 512->1", False, 512, 1, 4, 1, 0),
    ("G convT1 100->512", True, 100, 512, 1, 1, 0),
    ("G convT2 512->256", True, 512, 256, 4, 2, 1),
    ("G convT3 256->128", True, 256, 128, 8, 2, 1),
    ("G convT4 128->64", True, 128, 64, 16, 2, 1),
    ("G convT5 64->3", True, 64, 3, 32, 2, 1),
]


def median_ms(f):
    f()
    f()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


total = [0.0, 0.0, 0.0]
for name, transposed, c, o, side, s, p in LAYERS:
    x = torch.randn(batch, c, side, side)
    if transposed:
        w = torch.randn(c, o, 4, 4) * 0.02
        conv = lambda x, w: F.conv_transpose2d(x, w, stride=s, padding=p)
    else:
        w = torch.randn(o, c, 4, 4) * 0.02
        conv = lambda x, w: F.conv2d(x, w, stride=s, padding=p)
    with torch.no_grad():
        y = conv(x, w)
    gy = torch.randn_like(y)
    oside = y.shape[-1]
    # Multiply-adds of the direct convolution (the smaller side's pixels for a transposed one).
    pixels = side * side if transposed else oside * oside
    flops = 2 * batch * pixels * c * o * 16

    def forward():
        with torch.no_grad():
            conv(x, w)

    # A transposed convolution's gradients are those of the convolution it is the adjoint of.
    if transposed:
        def input_grad():
            F.conv2d(gy, w, stride=s, padding=p)

        def weight_grad():
            torch.nn.grad.conv2d_weight(gy, w.shape, x, stride=s, padding=p)
    else:
        def input_grad():
            torch.nn.grad.conv2d_input(x.shape, w, gy, stride=s, padding=p)

        def weight_grad():
            torch.nn.grad.conv2d_weight(x, w.shape, gy, stride=s, padding=p)

    fwd = median_ms(forward)
    dx = median_ms(input_grad)
    dw = median_ms(weight_grad)
    for i, t in enumerate((fwd, dx, dw)):
        total[i] += t
    g = lambda t: flops / t / 1e6
    print(f"{name:20s} forward {fwd:7.2f} ms {g(fwd):6.1f} GFLOP/s  input grad {dx:7.2f} ms "
          f"{g(dx):6.1f}  weight grad {dw:7.2f} ms {g(dw):6.1f}")
print(f"{'sum':20s} forward {total[0]:7.2f} ms  input grad {total[1]:7.2f} ms  weight grad "
      f"{total[2]:7.2f} ms")
