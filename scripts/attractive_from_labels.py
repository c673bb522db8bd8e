#!/usr/bin/env python3
"""How much of `Attractive` the other 39 CelebA labels explain on a CelebA-format folder.

Fits a logistic regression (scikit-learn) on the training side's true labels and prints its
accuracy next to the majority-class baseline on the validation and test sides: the best a
model that reads the other attributes perfectly can expect, a yardstick for the attribute
classifiers. Usage (needs numpy and scikit-learn):

    python3 scripts/attractive_from_labels.py data-fixtures/celeba
"""
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

root = Path(sys.argv[1] if len(sys.argv) > 1 else "data-fixtures/celeba")
partition = {}
for line in (root / "list_eval_partition.txt").read_text().splitlines():
    if line.strip():
        name, side = line.split()
        partition[name] = int(side)
lines = (root / "list_attr_celeba.txt").read_text().splitlines()
names = lines[1].split()
rows, sides = [], []
for line in lines[2:]:
    if line.strip():
        fields = line.split()
        rows.append([int(v) > 0 for v in fields[1:]])
        sides.append(partition[fields[0]])
x, sides = np.array(rows, float), np.array(sides)
k = names.index("Attractive")
y, others = x[:, k], np.delete(x, k, axis=1)
model = LogisticRegression(max_iter=2000).fit(others[sides == 0], y[sides == 0])
for side, label in ((1, "valid"), (2, "test")):
    m = sides == side
    majority = max(y[m].mean(), 1 - y[m].mean())
    print(f"{label}: {m.sum()} images, from the other labels {model.score(others[m], y[m]):.3f}, majority {majority:.3f}")
