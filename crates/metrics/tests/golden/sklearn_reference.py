#!/usr/bin/env python3
"""Reference values for deeprecog-metrics' golden tests, computed with scikit-learn.

Run from this directory to regenerate `sklearn_reference.json`:

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn numpy scipy
    /tmp/skl/bin/python sklearn_reference.py

The JSON holds every input next to the expected outputs, so the Rust tests need neither
Python nor a random generator that matches numpy's. Undefined values are `null`; the `+inf`
first ROC threshold is `null` too (JSON has no infinity).
"""

import json
import math
import os
import warnings

import numpy as np
import scipy
import sklearn
from scipy.linalg import sqrtm
from scipy.optimize import brentq
from scipy.interpolate import interp1d
from sklearn import metrics
from sklearn.calibration import calibration_curve

warnings.simplefilter("ignore")
rng = np.random.default_rng(20240601)


def num(x):
    """A float for JSON, or None for NaN (undefined) / infinity."""
    if x is None:
        return None
    x = float(x)
    return None if (math.isnan(x) or math.isinf(x)) else x


def nums(xs):
    return [num(x) for x in xs]


def is_prob(s):
    return bool(np.all((s >= 0) & (s <= 1)))


def eer_exact(y, s):
    """EER as the intersection of the piecewise-linear ROC with tpr = 1 - fpr."""
    fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=False)
    d = fpr - (1 - tpr)
    i = int(np.argmax(d >= 0))
    if i > 0 and d[i] > d[i - 1]:
        t = -d[i - 1] / (d[i] - d[i - 1])
        rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    else:
        rate = (fpr[i] + 1 - tpr[i]) / 2
    # The common brentq recipe must agree to its own tolerance.
    alt = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-14)
    assert abs(alt - rate) < 1e-9, (alt, rate)
    return rate, thr[i]


def best_threshold(values, thresholds):
    """argmax with ties going to the highest threshold (thresholds given in any order)."""
    order = np.argsort(-np.asarray(thresholds), kind="stable")
    v = np.asarray(values)[order]
    t = np.asarray(thresholds)[order]
    k = int(np.argmax(v))
    return float(t[k]), float(v[k])


def ece_equal_width(y, p, bins):
    # The same binning as sklearn.calibration.calibration_curve(strategy="uniform").
    idx = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p)
    total = 0.0
    gaps = []
    for b in range(bins):
        m = idx == b
        if m.any():
            gap = abs(y[m].mean() - p[m].mean())
            total += m.sum() / len(y) * gap
            gaps.append(gap)
    return total, max(gaps)


def binary_case(name, y, s, threshold=0.5):
    y = np.asarray(y, dtype=int)
    s = np.asarray(s, dtype=float)
    pred = (s >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    has_pos = bool(y.sum() > 0)
    tn, fp, fn, tp = metrics.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out = {
        "name": name,
        "labels": [int(v) for v in y],
        "scores": [float(v) for v in s],
        "threshold": threshold,
        "confusion": {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)},
        "accuracy": metrics.accuracy_score(y, pred),
        "precision": num(metrics.precision_score(y, pred, zero_division=np.nan)),
        "recall": num(metrics.recall_score(y, pred, zero_division=np.nan)),
        "f1": num(metrics.f1_score(y, pred, zero_division=np.nan)),
        "f2": num(metrics.fbeta_score(y, pred, beta=2.0, zero_division=np.nan)),
        "balanced_accuracy": metrics.balanced_accuracy_score(y, pred),
        "majority_baseline": max(y.mean(), 1 - y.mean()),
    }
    if both:
        fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=False)
        out["roc"] = {"fpr": nums(fpr), "tpr": nums(tpr), "thresholds": nums(thr)}
        fpr, tpr, thr = metrics.roc_curve(y, s)
        out["roc_simplified"] = {"fpr": nums(fpr), "tpr": nums(tpr), "thresholds": nums(thr)}
        out["roc_auc"] = metrics.roc_auc_score(y, s)
        rate, thr_eer = eer_exact(y, s)
        out["eer"] = {"rate": rate, "threshold": float(thr_eer)}
        fpr, tpr, thr = metrics.roc_curve(y, s, drop_intermediate=False)
        t, v = best_threshold((tpr - fpr)[1:], thr[1:])
        out["best_youden"] = {"threshold": t, "value": v}
    else:
        out["roc"] = None
        out["roc_simplified"] = None
        out["roc_auc"] = None
        out["eer"] = None
        out["best_youden"] = None
    if has_pos:
        p, r, thr = metrics.precision_recall_curve(y, s)
        out["pr"] = {"precision": nums(p), "recall": nums(r), "thresholds": nums(thr)}
        out["average_precision"] = metrics.average_precision_score(y, s)
        f1s = np.where(p[:-1] + r[:-1] > 0, 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-300), 0.0)
        # F1 from the counts, as the Rust side computes it, to avoid the P/R round trip.
        counts_f1 = []
        for t_ in thr:
            pr_ = (s >= t_).astype(int)
            counts_f1.append(metrics.f1_score(y, pr_, zero_division=0.0))
        assert np.allclose(f1s, counts_f1, atol=1e-12)
        t, v = best_threshold(counts_f1, thr)
        out["best_f1"] = {"threshold": t, "value": v}
    else:
        # scikit-learn returns 0 with a warning; deeprecog calls it undefined.
        out["pr"] = None
        out["average_precision"] = None
        out["best_f1"] = None
    if is_prob(s):
        out["log_loss"] = metrics.log_loss(y, s, labels=[0, 1])
        # The DFDC scorer clipped at 1e-15; reproduce it by hand, in scikit-learn's order.
        q = np.where(y == 1, s, 1 - s)
        out["log_loss_dfdc"] = float(np.mean(-np.log(np.clip(q, 1e-15, 1 - 1e-15))))
        ece, mce = ece_equal_width(y, s, 15)
        out["ece15"] = ece
        out["mce15"] = mce
        frac_pos, mean_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
        out["calibration_curve10"] = {
            "fraction_positive": nums(frac_pos),
            "mean_predicted": nums(mean_pred),
        }
    else:
        out["log_loss"] = None
        out["log_loss_dfdc"] = None
        out["ece15"] = None
        out["mce15"] = None
        out["calibration_curve10"] = None
    return out


def binary_cases():
    cases = []
    n = 200
    y = rng.integers(0, 2, n)
    s = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1)
    cases.append(binary_case("random_continuous", y, s))
    y = rng.integers(0, 2, 300)
    s = np.round(np.clip(0.5 + 0.2 * (2 * y - 1) + rng.normal(0, 0.3, 300), 0, 1), 1)
    cases.append(binary_case("heavy_ties_one_decimal", y, s))
    cases.append(binary_case("all_scores_tied", [0, 1, 1, 0, 1], [0.5] * 5))
    cases.append(binary_case("tiny", [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))
    cases.append(binary_case("perfect", [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9]))
    cases.append(binary_case("inverted", [1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]))
    y = (rng.random(500) < 0.1).astype(int)
    s = np.clip(rng.beta(2, 5, 500) + 0.3 * y, 0, 1)
    cases.append(binary_case("imbalanced_10pct", y, s))
    y = (rng.random(400) < 0.8).astype(int)
    s = np.clip(rng.normal(0.6 + 0.2 * y, 0.15), 0, 1)
    cases.append(binary_case("dfdc_like_80pct_fake", y, s))
    cases.append(binary_case("all_positive", [1, 1, 1, 1], [0.2, 0.9, 0.9, 0.6]))
    cases.append(binary_case("all_negative", [0, 0, 0], [0.2, 0.7, 0.1]))
    cases.append(
        binary_case(
            "extreme_probabilities",
            [1, 0, 1, 0, 1, 0, 1, 0, 1, 0],
            [0.0, 1.0, 1e-20, 1 - 1e-17, 1e-300, 1e-20, 1.0, 0.0, 1 - 1e-16, 0.5],
        )
    )
    cases.append(binary_case("confident_and_right", [1, 0, 1, 0], [1.0, 0.0, 1.0, 1e-20]))
    y = rng.integers(0, 2, 100)
    logits = rng.normal(0, 3, 100) + 2 * y
    cases.append(binary_case("logit_scores_with_negatives", y, logits, threshold=0.0))
    cases.append(
        binary_case("signed_zero_tie", [1, 0, 1, 0], [0.0, -0.0, 1.0, 0.5], threshold=0.5)
    )
    return cases


def multilabel_case():
    n, k = 40, 4
    y = rng.integers(0, 2, (n, k))
    y[:, 3] = 1  # one single-class column: its AUC is undefined
    s = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.3, (n, k)), 0, 1)
    s = np.round(s, 2)
    pred = (s >= 0.5).astype(int)
    per = []
    for j in range(k):
        yj, sj, pj = y[:, j], s[:, j], pred[:, j]
        per.append(
            {
                "accuracy": metrics.accuracy_score(yj, pj),
                "f1": num(metrics.f1_score(yj, pj, zero_division=np.nan)),
                "roc_auc": metrics.roc_auc_score(yj, sj) if len(np.unique(yj)) == 2 else None,
            }
        )
    return {
        "n": n,
        "k": k,
        "labels": [int(v) for v in y.ravel()],
        "scores": [float(v) for v in s.ravel()],
        "per_label": per,
        "mean_accuracy": float(np.mean([p["accuracy"] for p in per])),
        "exact_match_accuracy": metrics.accuracy_score(y, pred),
        "hamming_loss": metrics.hamming_loss(y, pred),
    }


def video_case():
    videos = [f"v{i}" for i in range(30)]
    vy = rng.integers(0, 2, 30)
    rows_v, rows_y, rows_s = [], [], []
    for v, lab in zip(videos, vy):
        for _ in range(int(rng.integers(1, 8))):
            rows_v.append(v)
            rows_y.append(int(lab))
            rows_s.append(float(np.clip(rng.normal(0.4 + 0.2 * lab, 0.2), 0, 1)))
    order = rng.permutation(len(rows_v))
    rows_v = [rows_v[i] for i in order]
    rows_y = [rows_y[i] for i in order]
    rows_s = [rows_s[i] for i in order]
    means = {}
    for v, sc in zip(rows_v, rows_s):
        means.setdefault(v, []).append(sc)
    first = list(dict.fromkeys(rows_v))
    agg_y = [int(vy[videos.index(v)]) for v in first]
    agg_s = [float(np.mean(means[v])) for v in first]
    agg_med = [float(np.median(means[v])) for v in first]
    return {
        "videos": rows_v,
        "labels": rows_y,
        "scores": rows_s,
        "video_order": first,
        "video_labels": agg_y,
        "video_mean_scores": agg_s,
        "video_median_scores": agg_med,
        "video_roc_auc": metrics.roc_auc_score(agg_y, agg_s),
        "frame_roc_auc": metrics.roc_auc_score(rows_y, rows_s),
    }


def temperature_case():
    n = 300
    y = rng.integers(0, 2, n)
    # An over-confident model: logits scaled up by 3.
    logits = 3.0 * (rng.normal(0, 1, n) + 1.2 * (2 * y - 1))

    def grad(a):
        p = 1 / (1 + np.exp(-a * logits))
        return float(np.sum(logits * (p - y)))

    a = brentq(grad, 1e-6, 100.0, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    return {"labels": [int(v) for v in y], "logits": [float(v) for v in logits], "temperature": 1 / a}


def fid_case():
    d = 6
    a = rng.normal(0, 1, (60, d)) @ rng.normal(0, 1, (d, d))
    b = rng.normal(0.3, 1.2, (80, d)) @ rng.normal(0, 1, (d, d))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    fid = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    # Independent check through symmetric eigen-decompositions.
    w, v = np.linalg.eigh(cov_a)
    root = (v * np.sqrt(np.maximum(w, 0))) @ v.T
    mu = np.linalg.eigvalsh(root @ cov_b @ root)
    fid_sym = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sum(np.sqrt(np.maximum(mu, 0))))
    assert abs(fid - fid_sym) < 1e-9 * max(1.0, abs(fid)), (fid, fid_sym)
    return {
        "dim": d,
        "a": [float(x) for x in a.ravel()],
        "b": [float(x) for x in b.ravel()],
        "mean_a": nums(mu_a),
        "cov_a": nums(cov_a.ravel()),
        "frechet_distance": fid_sym,
        "frechet_distance_sqrtm": fid,
    }


def main():
    out = {
        "generated_by": {
            "scikit_learn": sklearn.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "log_loss_eps": float(np.finfo(np.float64).eps),
        "binary": binary_cases(),
        "multilabel": multilabel_case(),
        "video": video_case(),
        "temperature": temperature_case(),
        "fid": fid_case(),
    }
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "sklearn_reference.json"), "w") as f:
        json.dump(out, f, indent=1, allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
