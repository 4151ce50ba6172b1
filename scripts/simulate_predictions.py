#!/usr/bin/env python3
"""Simulated model outputs for a `delineate synth` dataset, to try
`delineate evaluate` before a model exists.

Each truth lesion is missed with probability --miss; otherwise it becomes
a probability blob (sometimes one voxel larger) with a confidence drawn in
0.55-0.99; 0-4 false-positive cubes per case are added at 0.51-0.9.
Writes OUT/CASE.nii.gz (float32, on the truth grid). Deterministic.

    python3 scripts/simulate_predictions.py --synth DIR --out OUT [--miss 0.2] [--seed 0]
"""
import argparse
import os

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--miss", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for case in sorted(os.listdir(a.synth)):
        p = os.path.join(a.synth, case, "truth.nii.gz")
        if not os.path.isfile(p):
            continue
        t = nib.load(p)
        d = np.asarray(t.dataobj)
        prob = np.zeros(d.shape, np.float32)
        for lab in np.unique(d[d > 0]):
            if rng.random() < a.miss:
                continue
            m = d == lab
            if rng.random() < 0.5:
                m = ndi.binary_dilation(m)
            prob[m] = np.maximum(prob[m], rng.uniform(0.55, 0.99))
        for _ in range(int(rng.integers(0, 5))):
            c = [int(rng.integers(20, s - 20)) for s in d.shape]
            sl = tuple(slice(x - 2, x + 2) for x in c)
            prob[sl] = np.maximum(prob[sl], rng.uniform(0.51, 0.9))
        nib.save(nib.Nifti1Image(prob, t.affine), os.path.join(a.out, f"{case}.nii.gz"))
    print(f"predictions in {a.out}")


if __name__ == "__main__":
    main()
