"""The seed GAN against Keras itself, for tests/golden.rs.

The synthesis report built its GAN in Keras (Chollet's *Deep Learning with Python* recipe):

    generator: Input(latent) -> Dense(ch*h*w) -> LeakyReLU -> Reshape((h, w, ch))
               -> Conv2D(width, 5, same) -> LeakyReLU -> Conv2DTranspose(width, 4, strides 2, same)
               -> LeakyReLU -> Conv2D(width, 5, same) -> LeakyReLU -> Conv2D(width, 5, same)
               -> LeakyReLU -> Conv2D(3, 7, same, tanh)
    discriminator: Conv2D(width, 3) -> LeakyReLU -> 3 x [Conv2D(width, 4, strides 2) -> LeakyReLU]
               -> Flatten -> Dropout(0.4) -> Dense(1)

Here at latent 16, width 8, 32x32, built with Keras 3 and given the weights that
tests/golden/reference.py's `fill` formula puts under the project's (PyTorch-layout) names,
moved into Keras's layouts: kernels HWIO (Conv2DTranspose: HW-out-in), Dense kernels
transposed, and the Dense units / Flatten inputs permuted between Keras's channels-last order and
the project's channels-first order (the one place the two models differ: a fixed permutation).
Outputs are summarised like reference.json (logits for the discriminator, Dropout off).

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy
    /tmp/tfvenv/bin/python crates/gan/tests/golden/keras_reference.py > crates/gan/tests/golden/keras_reference.json

(tensorflow-cpu 2.21.0, keras 3.15.1, numpy; CPU.)
"""
import json

import numpy as np
import keras
from keras import layers


def fill(name, n):
    k = sum(ord(c) for c in name) % 97
    i = np.arange(n, dtype=np.float64)
    v = 0.05 * np.sin(0.37 * i + 0.11 * k)
    return v.astype(np.float32)


def wave(n, a, b):
    i = np.arange(n, dtype=np.float64)
    return (b * np.sin(a * i)).astype(np.float32)


latent, width, size, n = 16, 8, 32, 4
half, ch = size // 2, width // 2

g = keras.Sequential([
    keras.Input((latent,)),
    layers.Dense(ch * half * half), layers.LeakyReLU(),
    layers.Reshape((half, half, ch)),
    layers.Conv2D(width, 5, padding="same"), layers.LeakyReLU(),
    layers.Conv2DTranspose(width, 4, strides=2, padding="same"), layers.LeakyReLU(),
    layers.Conv2D(width, 5, padding="same"), layers.LeakyReLU(),
    layers.Conv2D(width, 5, padding="same"), layers.LeakyReLU(),
    layers.Conv2D(3, 7, padding="same", activation="tanh"),
])
d = keras.Sequential([
    keras.Input((size, size, 3)),
    layers.Conv2D(width, 3), layers.LeakyReLU(),
    layers.Conv2D(width, 4, strides=2), layers.LeakyReLU(),
    layers.Conv2D(width, 4, strides=2), layers.LeakyReLU(),
    layers.Conv2D(width, 4, strides=2), layers.LeakyReLU(),
    layers.Flatten(), layers.Dropout(0.4), layers.Dense(1),
])

# Channels-first unit u_o = c*H*W + h*W + w sits at channels-last position (h*W + w)*C + c.
def chw_to_hwc(c, h, w):
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def conv(name, cout, cin, k):
    w = fill(name + ".weight", cout * cin * k * k).reshape(cout, cin, k, k)
    return [w.transpose(2, 3, 1, 0), fill(name + ".bias", cout)]


def deconv(name, cin, cout, k):
    w = fill(name + ".weight", cin * cout * k * k).reshape(cin, cout, k, k)
    return [w.transpose(2, 3, 1, 0), fill(name + ".bias", cout)]


perm = chw_to_hwc(ch, half, half)
dense_w = fill("dense.weight", ch * half * half * latent).reshape(ch * half * half, latent)
dense_b = fill("dense.bias", ch * half * half)
g_weights = [dense_w[perm].T, dense_b[perm]]
g_weights += conv("conv1", width, ch, 5) + deconv("deconv", width, width, 4)
g_weights += conv("conv2", width, width, 5) + conv("conv3", width, width, 5) + conv("out", 3, width, 7)
g.set_weights(g_weights)

side = size - 2
for _ in range(3):
    side = (side - 4) // 2 + 1
d_weights = conv("conv1", width, 3, 3) + conv("conv2", width, width, 4)
d_weights += conv("conv3", width, width, 4) + conv("conv4", width, width, 4)
flat = width * side * side
dw = fill("dense.weight", flat).reshape(1, flat)
d_weights += [dw[:, chw_to_hwc(width, side, side)].T, fill("dense.bias", 1)]
d.set_weights(d_weights)

z = wave(n * latent, 0.7, 1.0).reshape(n, latent)
x = wave(n * 3 * size * size, 0.013, 0.9).reshape(n, 3, size, size)
gen = np.asarray(g(z, training=False)).transpose(0, 3, 1, 2)
logits = np.asarray(d(x.transpose(0, 2, 3, 1), training=False)).reshape(-1)


def summary(v):
    v = np.asarray(v, np.float64)
    flat = v.reshape(-1)
    return {"shape": list(v.shape), "sum": float(flat.sum()), "abs_sum": float(np.abs(flat).sum()), "head": [float(t) for t in flat[:8]]}


print(json.dumps({
    "seed_g": summary(gen),
    "seed_d": summary(logits),
    "versions": {"keras": keras.__version__, "numpy": np.__version__},
}, indent=1))
