"""Reference KID values for `tests/kid_golden.rs`, from two independent NumPy implementations.

The features are 64-bit xorshift streams (the generator of `tests/common/fid_stats.rs`, the same
numbers bit for bit in `tests/kid_golden.rs`): x is 37 x 16 (seed 1), y is 29 x 16 (seed 2)
scaled by 1.2 and shifted by 0.1.

- `mmd2_unequal`: the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 between all of x and all of
  y (different sizes), written from the U-statistic's definition;
- `mmd2_equal_torch_fidelity`: x[:29] against y with torch-fidelity 0.3's
  `polynomial_mmd` / `mmd2` (degree 3, gamma 1/d, coef0 1), one subset holding every row;
- `mmd2_equal_clean_fid`: the same sets through clean-fid 0.1.35's `kernel_distance` loop
  body (num_subsets = 1, subset = every row, in order).

Run: python kid_reference.py > kid_reference.json (numpy 2.4.6; printed with repr, so the
float64 values round-trip).
"""

import json

import numpy as np

MASK = (1 << 64) - 1


def xorshift(count, seed):
    state = 0x9E3779B97F4A7C15 ^ ((seed * 0xD1342543DE82EF95) & MASK)
    out = []
    for _ in range(count):
        state ^= (state << 13) & MASK
        state ^= state >> 7
        state ^= (state << 17) & MASK
        out.append((state >> 11) / float(1 << 53) - 0.5)
    return np.array(out)


def features():
    d = 16
    x = xorshift(37 * d, 1).reshape(37, d)
    y = (xorshift(29 * d, 2) * 1.2 + 0.1).reshape(29, d)
    return x, y


def mmd2_definition(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def torch_fidelity_mmd2(f1, f2):
    # torch_fidelity/metric_kid.py: polynomial_kernel then mmd2 (unit_diagonal=False).
    d = f1.shape[1]
    K_XX = (f1 @ f1.T / d + 1) ** 3
    K_YY = (f2 @ f2.T / d + 1) ** 3
    K_XY = (f1 @ f2.T / d + 1) ** 3
    m = K_XX.shape[0]
    diag_X, diag_Y = np.diagonal(K_XX), np.diagonal(K_YY)
    Kt_XX_sum = (K_XX.sum(axis=1) - diag_X).sum()
    Kt_YY_sum = (K_YY.sum(axis=1) - diag_Y).sum()
    K_XY_sum = K_XY.sum(axis=0).sum()
    return (Kt_XX_sum + Kt_YY_sum) / (m * (m - 1)) - 2 * K_XY_sum / (m * m)


def clean_fid_kid(feats1, feats2):
    # cleanfid/fid.py kernel_distance with num_subsets = 1 and the subsets = all rows in order.
    n = feats1.shape[1]
    m = min(min(feats1.shape[0], feats2.shape[0]), 1000)
    t = 0
    x, y = feats2, feats1
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return t / 1 / m


def main():
    x, y = features()
    out = {
        "mmd2_unequal": float(mmd2_definition(x, y)),
        "mmd2_equal_torch_fidelity": float(torch_fidelity_mmd2(x[:29], y)),
        "mmd2_equal_clean_fid": float(clean_fid_kid(x[:29], y)),
        "numpy": np.__version__,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
