#!/usr/bin/env python3
"""Second-stage study (issue 27): does a classifier on the candidates'
features rank small lesions above their look-alikes better than the
network's probability does?

    scripts/classifier_study.py TRAIN.json TEST.json [TEST.json ...]

Each file is a `delineate candidates` output (candidates.json). Classifiers
are fitted on TRAIN's candidates (label: the candidate reaches a lesion) and
scored on each TEST set, lesion-wise: at a score threshold, a lesion is
found when a candidate reaching it scores above it; every other candidate
above it is a false positive. Prints recall by size at 0.5/1/2 false
positives per case and the candidates' reach (the ceiling).
"""
import json
import sys

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

BUCKETS = [(0, 3, "<3"), (3, 5, "3-5"), (5, 10, "5-10"), (10, 1e9, ">=10")]


def load(path):
    d = json.load(open(path))
    rows, cases = [], []
    for ci, c in enumerate(d["cases"]):
        r = c["result"]
        sizes = {l["label"]: l["diameter_mm"] for l in r["reach"]}
        for cand in r["candidates"]:
            # The rim of a lesion is neither a lesion nor a look-alike.
            if cand.get("near_lesion"):
                continue
            rows.append((ci, cand["lesion"], cand["features"]))
        cases.append(sizes)
    x = np.array([f for _, _, f in rows], dtype=np.float64)
    y = np.array([lab is not None for _, lab, _ in rows])
    case = np.array([ci for ci, _, _ in rows])
    lesion = np.array([lab if lab is not None else 0 for _, lab, _ in rows])
    return x, y, case, lesion, cases


def recall_at_fp(score, case, lesion, cases, fps=(0.5, 1.0, 2.0)):
    n_cases = len(cases)
    # For every threshold (each candidate score), FP count and found lesions.
    order = np.argsort(-score)
    out = {}
    for fp_target in fps:
        budget = fp_target * n_cases
        found = set()
        fp = 0
        for i in order:
            if lesion[i] == 0:
                if fp + 1 > budget:
                    break
                fp += 1
            else:
                found.add((case[i], lesion[i]))
        res = []
        for lo, hi, _ in BUCKETS:
            ls = [(ci, l) for ci, s in enumerate(cases) for l, d in s.items() if lo <= d < hi]
            res.append((sum((ci, l) in found for ci, l in ls), len(ls)))
        out[fp_target] = res
    return out


def reach(case, lesion, cases):
    got = set(zip(case[lesion > 0], lesion[lesion > 0]))
    res = []
    for lo, hi, _ in BUCKETS:
        ls = [(ci, l) for ci, s in enumerate(cases) for l, d in s.items() if lo <= d < hi]
        res.append((sum((ci, l) in got for ci, l in ls), len(ls)))
    return res


def fmt(res):
    return " | ".join(f"{a}/{b}" for a, b in res)


def main():
    xtr, ytr, ctr, ltr, _ = load(sys.argv[1])
    print(f"train: {len(ytr)} candidates, {ytr.sum()} on lesions")
    # Each lesion weighs 20 look-alikes, shared by its candidates (as the
    # Rust fit does).
    keys = list(zip(ctr, ltr))
    counts = {}
    for k, y in zip(keys, ytr):
        if y:
            counts[k] = counts.get(k, 0) + 1
    w = np.array([20.0 / counts[k] if y else 1.0 for k, y in zip(keys, ytr)])
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)),
        "forest": RandomForestClassifier(n_estimators=200, min_samples_leaf=3, n_jobs=2, random_state=0),
        "boosted": HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0),
    }
    for k, m in models.items():
        if k == "logistic":
            m.fit(xtr, ytr, logisticregression__sample_weight=w)
        else:
            m.fit(xtr, ytr, sample_weight=w)
    print("| set | score | FP/case | " + " | ".join(b[2] for b in BUCKETS) + " |")
    print("|---|---|---|" + "---|" * len(BUCKETS))
    for path in sys.argv[2:]:
        x, y, case, lesion, cases = load(path)
        name = path.split("/")[-2]
        print(f"| {name} | reach (ceiling) | all {len(y) / len(cases):.0f} | {fmt(reach(case, lesion, cases))} |")
        scores = {"network": x[:, 0]}
        for k, m in models.items():
            scores[k] = m.predict_proba(x)[:, 1]
        for k, s in scores.items():
            for fp, res in recall_at_fp(s, case, lesion, cases).items():
                print(f"| {name} | {k} | {fp} | {fmt(res)} |")


if __name__ == "__main__":
    main()
