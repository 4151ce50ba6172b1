#!/usr/bin/env python3
"""Simulated clinical study from a `delineate synth` dataset.

For each case with lesions, raters A..D contour every lesion twice:
manually (each rater's own habit of drawing large or small, a random
shift of up to 1 voxel, and small lesions missed now and then), and
starting from a CNN proposal that is the same for everyone (the rater
edits it a little). Contouring times: about 1 min + 50 s per lesion
manually, 1.5-3x less with the CNN. Writes STUDY/study.toml, times.csv
and cropped uint8 masks, deterministically from --seed.

    python3 scripts/make_study.py --synth DIR --out STUDY [--raters 4] [--seed 0]
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi


def morph(mask, steps):
    if steps > 0:
        return ndi.binary_dilation(mask, iterations=steps)
    if steps < 0:
        eroded = ndi.binary_erosion(mask, iterations=-steps)
        return eroded if eroded.any() else mask
    return mask


def shift(mask, rng):
    return np.roll(mask, tuple(int(v) for v in rng.integers(-1, 2, size=3)), axis=(0, 1, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--raters", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    raters = [chr(ord("A") + i) for i in range(a.raters)]
    habit = {r: int(rng.choice([-1, 0, 0, 1])) for r in raters}
    os.makedirs(a.out, exist_ok=True)
    cases, rows = [], []
    for case in sorted(os.listdir(a.synth)):
        p = os.path.join(a.synth, case, "truth.nii.gz")
        if not os.path.isfile(p):
            continue
        img = nib.load(p)
        truth = np.asarray(img.dataobj)
        labels = [int(v) for v in np.unique(truth) if v > 0]
        if not labels:
            continue
        info = {l["id"]: l for l in json.load(open(os.path.join(a.synth, case, "lesions.json")))["lesions"]}
        idx = np.argwhere(truth > 0)
        lo = np.maximum(idx.min(0) - 8, 0)
        hi = np.minimum(idx.max(0) + 9, truth.shape)
        sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
        t = truth[sl]
        affine = img.affine.copy()
        affine[:3, 3] = nib.affines.apply_affine(img.affine, lo)
        cnn_proposal = {l: shift(morph(t == l, int(rng.choice([-1, 0, 1]))), rng) for l in labels}
        os.makedirs(os.path.join(a.out, case), exist_ok=True)
        for r in raters:
            manual = np.zeros(t.shape, bool)
            cnn = np.zeros(t.shape, bool)
            for l in labels:
                small = info.get(l, {}).get("equivalent_diameter_mm", 10) < 4
                if not (small and rng.random() < 0.15):
                    manual |= shift(morph(t == l, habit[r] + int(rng.choice([-1, 0, 0, 1]))), rng)
                edit = int(rng.choice([0, 0, habit[r], -1, 1]))
                edited = morph(cnn_proposal[l], edit)
                cnn |= shift(edited, rng) if rng.random() < 0.3 else edited
            for name, m in (("manual", manual), ("cnn", cnn)):
                nib.save(nib.Nifti1Image(m.astype(np.uint8), affine), os.path.join(a.out, case, f"{r}_{name}.nii.gz"))
            manual_s = (60 + 50 * len(labels)) * float(rng.lognormal(0, 0.25))
            cnn_s = manual_s / float(rng.uniform(1.5, 3.0))
            rows.append((case, r, "manual", manual_s))
            rows.append((case, r, "cnn", cnn_s))
        cases.append(case)
    with open(os.path.join(a.out, "times.csv"), "w") as f:
        f.write("case,rater,mode,time\n")
        for c, r, m, s in rows:
            f.write(f"{c},{r},{m},{int(s // 60)}:{s % 60:04.1f}\n")
    with open(os.path.join(a.out, "study.toml"), "w") as f:
        f.write("raters = [%s]\n" % ", ".join(f'"{r}"' for r in raters))
        f.write("cases = [%s]\n" % ", ".join(f'"{c}"' for c in cases))
        f.write('manual = "{case}/{rater}_manual.nii.gz"\ncnn = "{case}/{rater}_cnn.nii.gz"\ntimes = "times.csv"\n')
    print(f"{len(cases)} cases, {len(raters)} raters -> {a.out}/study.toml")


if __name__ == "__main__":
    main()
