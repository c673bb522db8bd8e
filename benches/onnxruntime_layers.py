"""Where onnxruntime's inference of a torchvision network spends its time, node by node: the
counterpart of `cargo run --release -p deeprecog-nn --example resnet_layers` and
`... --example mobilenet_layers`, for finding the layers where its kernels beat ours.

    python benches/onnxruntime_layers.py MODEL BATCH [THREADS] [RUNS]

MODEL: resnet50 | mobilenet_v2 (224x224, random weights; the timings do not depend on them).
Prints the median milliseconds of a whole run without and with profiling, then each node's
median kernel time over RUNS profiled runs (after three warm-up ones) in graph order, then
the sums per operator type. Profiling adds a cost per node, large beside MobileNetV2's
batch-1 layers (the two medians show how large), so compare nodes against ours with that in
mind, and totals by the first median. onnxruntime
fuses each convolution with its BatchNorm and activation, and ResNet's residual addition and
ReLU into the block's last convolution. Runs in the venv of benches/compare_cpu.sh (torch,
torchvision, onnx, onnxruntime); never a project dependency.
"""
import collections
import io
import json
import os
import statistics
import sys
import tempfile
import time

import onnxruntime as ort
import torch
import torchvision

name, batch = sys.argv[1], int(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 20
torch.manual_seed(0)
model = getattr(torchvision.models, name)(weights=None).eval()
x = torch.randn(batch, 3, 224, 224)
onnx = io.BytesIO()
torch.onnx.export(model, x, onnx, input_names=["x"], output_names=["y"], dynamo=False)
feed = {"x": x.numpy()}


def session(profile_prefix=None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(onnx.getvalue(), opts, providers=["CPUExecutionProvider"])


plain = session()
times = []
for i in range(runs + 3):
    t = time.perf_counter()
    plain.run(None, feed)
    if i >= 3:
        times.append(time.perf_counter() - t)
print(f"{name} batch {batch}, {threads} threads: median {statistics.median(times) * 1e3:.2f} ms per run")

with tempfile.TemporaryDirectory() as tmp:
    profiled = session(os.path.join(tmp, "profile"))
    times = []
    for i in range(3 + runs):
        t = time.perf_counter()
        profiled.run(None, feed)
        if i >= 3:
            times.append(time.perf_counter() - t)
    print(f"profiled: median {statistics.median(times) * 1e3:.2f} ms per run")
    with open(profiled.end_profiling()) as f:
        events = json.load(f)
kernel = collections.defaultdict(list)
op_type = {}
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        node = e["name"][: -len("_kernel_time")]
        kernel[node].append(e["dur"] / 1e3)
        op_type[node] = e["args"].get("op_name", "?")
per_type = collections.defaultdict(float)
for node, durations in kernel.items():
    ms = statistics.median(durations[-runs:])
    per_type[op_type[node]] += ms
    print(f"{ms:8.3f} ms  {op_type[node]:<18} {node}")
for op, ms in sorted(per_type.items(), key=lambda kv: -kv[1]):
    print(f"{ms:8.2f} ms  {op}")
