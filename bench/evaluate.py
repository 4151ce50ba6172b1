#!/usr/bin/env python3
"""Benchmark: lesion-wise evaluation of 256^3 cases with 20 lesions each.

delineate (`evaluate --bootstrap 0`, the whole command: reading NIfTI,
components, matching, curves, reports and figures) against the authors'
Python approach on the same files in the same run: scikit-image labelling
(26-connectivity) of the truth and of probability > 0.5, then per truth
lesion and per overlapping component a Dice from whole-volume boolean
masks, the component's maximum probability as confidence, and components
overlapping no lesion as false positives. Both per-lesion results are then
compared (voxels, hit, best Dice, confidence).

usage: bench/evaluate.py [--delineate target/release/delineate] [--cases 5] [--work DIR]
Installs scikit-image from PyPI if missing. Prints a table; not a test.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np

N, LESIONS = 256, 20


def ensure_skimage():
    try:
        import skimage  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "scikit-image==0.25.2"], check=True)


def ball(c, r):
    lo = [max(0, int(x - r - 1)) for x in c]
    hi = [min(N, int(x + r + 2)) for x in c]
    z = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    d2 = sum((z[a] - c[a]) ** 2 for a in range(3))
    return tuple(slice(l, h) for l, h in zip(lo, hi)), d2 <= r * r, np.sqrt(d2)


def make_cases(work, n_cases, ext):
    rng = np.random.default_rng(5)
    for sub in ("truth", "pred"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    for c in range(n_cases):
        tp = os.path.join(work, "truth", f"c{c}{ext}")
        if os.path.exists(tp):
            continue
        truth = np.zeros((N, N, N), np.uint8)
        prob = np.zeros((N, N, N), np.float32)
        for _ in range(LESIONS):
            ctr = rng.uniform(20, N - 20, 3)
            r = float(np.exp(rng.uniform(np.log(1.0), np.log(12.0))))
            sl, m, _ = ball(ctr, r)
            truth[sl][m] = 1
            if rng.random() < 0.8:
                sl, m, d = ball(ctr + rng.uniform(-1, 1, 3), r * rng.uniform(0.8, 1.2))
                conf = rng.uniform(0.55, 0.99)
                prob[sl] = np.maximum(prob[sl], np.where(m, conf - 0.04 * d / max(r, 1), 0).astype(np.float32))
        for _ in range(10):
            sl, m, _ = ball(rng.uniform(10, N - 10, 3), rng.uniform(1, 4))
            prob[sl][m] = np.maximum(prob[sl][m], rng.uniform(0.51, 0.95))
        nib.save(nib.Nifti1Image(truth, np.eye(4)), tp)
        nib.save(nib.Nifti1Image(prob, np.eye(4)), os.path.join(work, "pred", f"c{c}{ext}"))


def authors(work, n_cases, ext):
    """The per-lesion loop with whole-volume masks."""
    from skimage.measure import label

    rows = []
    for c in range(n_cases):
        t = np.asarray(nib.load(os.path.join(work, "truth", f"c{c}{ext}")).dataobj) > 0
        p = np.asarray(nib.load(os.path.join(work, "pred", f"c{c}{ext}")).dataobj)
        lt = label(t, connectivity=3)
        lp = label(p > 0.5, connectivity=3)
        conf = {}
        for j in range(1, lp.max() + 1):
            mj = lp == j
            conf[j] = float(p[mj].max())
        for i in range(1, lt.max() + 1):
            mi = lt == i
            best, hit = 0.0, None
            for j in np.unique(lp[mi]):
                if j == 0:
                    continue
                mj = lp == j
                d = 2 * np.sum(mi & mj) / (np.sum(mi) + np.sum(mj))
                best = max(best, d)
                hit = conf[j] if hit is None else max(hit, conf[j])
            rows.append((f"c{c}", int(mi.sum()), hit is not None, round(float(best), 4), None if hit is None else round(hit, 5)))
        fp = sum(1 for j in range(1, lp.max() + 1) if not (lt[lp == j] > 0).any())
        rows.append((f"c{c}", "fp", fp))
    return rows


def ours(report):
    rows = []
    with open(os.path.join(report, "lesions.csv")) as f:
        for r in csv.DictReader(f):
            hit = r["hit"] == "1"
            rows.append((r["case"], int(r["voxels"]), hit, round(float(r["best_dice"]), 4),
                         round(float(r["hit_confidence"]), 5) if hit else None))
    fps = {}
    with open(os.path.join(report, "predictions.csv")) as f:
        for r in csv.DictReader(f):
            fps[r["case"]] = fps.get(r["case"], 0) + int(r["false_positive"])
    rows += [(c, "fp", n) for c, n in fps.items()]
    return rows


def identical(a, b):
    """Same lesions (by case and voxel count), hits and FP counts; Dice and
    confidence equal to the printed precision."""
    key = lambda r: (r[0], str(r[1]), r[3] if len(r) > 3 else 0)
    a, b = sorted(a, key=key), sorted(b, key=key)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[:3] != y[:3]:
            return False
        if len(x) > 3:
            if abs(x[3] - y[3]) > 1e-4:
                return False
            if (x[4] is None) != (y[4] is None) or (x[4] is not None and abs(x[4] - y[4]) > 2e-5):
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delineate", default="target/release/delineate")
    ap.add_argument("--cases", type=int, default=5)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    ensure_skimage()
    root = a.work or tempfile.mkdtemp(prefix="bench-eval-")
    print(f"{a.cases} cases of {N}^3 with {LESIONS} lesions each; same files for both, same run")
    print("| files | tool | seconds | per case | ratio |")
    print("|---|---|---|---|---|")
    for ext in (".nii", ".nii.gz"):
        work = os.path.join(root, ext.strip("."))
        make_cases(work, a.cases, ext)
        t_ours = []
        for i in range(3):
            out = os.path.join(work, f"report{i}")
            t0 = time.perf_counter()
            subprocess.run([a.delineate, "evaluate", "--pred", os.path.join(work, "pred"), "--truth",
                            os.path.join(work, "truth"), "--out", out, "--bootstrap", "none"], check=True,
                           stdout=subprocess.DEVNULL)
            t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = authors(work, a.cases, ext)
        t_auth = time.perf_counter() - t0
        same = identical(ref, ours(os.path.join(work, "report0")))
        best = min(t_ours)
        print(f"| {ext} | delineate evaluate (whole command, best of 3) | {best:.2f} | {best / a.cases:.3f} | 1.0 |")
        print(f"| {ext} | skimage label + whole-volume Dice (authors' approach) | {t_auth:.2f} | {t_auth / a.cases:.3f} | {t_auth / best:.1f}x slower |")
        print(f"| {ext} | per-lesion numbers identical (voxels, hit, best Dice, confidence; FP per case) | {same} | | |")
    print(f"work folder: {root}")


if __name__ == "__main__":
    main()
