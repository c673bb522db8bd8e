"""Reference FID for the xorshift statistics of `tests/common/fid_stats.rs` (d = 256, also the
statistics of the workspace's `benches/fid.rs`), used by `tests/fid_golden.rs`.

Rebuilds the same float64 statistics (the same 64-bit xorshift stream) and prints the distance
from numpy's `eigh` (symmetric formulation) and from scipy's `sqrtm` (pytorch-fid's).
Run: python fid_xorshift.py  (needs numpy and scipy; printed 57.5460167226702 and
57.54601672267013 with numpy 2.4.6).
"""

import numpy as np
from scipy.linalg import sqrtm

MASK = (1 << 64) - 1


def stats(d, seed):
    state = 0x9E3779B97F4A7C15 ^ ((seed * 0xD1342543DE82EF95) & MASK)

    def nxt():
        nonlocal state
        state ^= (state << 13) & MASK
        state ^= state >> 7
        state ^= (state << 17) & MASK
        return (state >> 11) / float(1 << 53) - 0.5

    m = max(d // 4, 1)
    b = np.array([nxt() for _ in range(d * m)]).reshape(d, m)
    cov = b @ b.T / m
    cov = (cov + cov.T) / 2
    cov[np.diag_indices(d)] += 0.01 + 0.99 * np.exp(-np.arange(d) / (d / 8.0))
    mean = np.array([nxt() for _ in range(d)])
    return mean, cov


def main():
    ma, ca = stats(256, 1)
    mb, cb = stats(256, 2)
    base = np.sum((ma - mb) ** 2) + np.trace(ca) + np.trace(cb)
    w, v = np.linalg.eigh(ca)
    root = (v * np.sqrt(np.maximum(w, 0))) @ v.T
    mu = np.linalg.eigvalsh(root @ cb @ root)
    fid = float(base - 2 * np.sum(np.sqrt(np.maximum(mu, 0))))
    fid_sqrtm = float(base - 2 * np.trace(sqrtm(ca @ cb).real))
    print(repr(fid), repr(fid_sqrtm))


if __name__ == "__main__":
    main()
