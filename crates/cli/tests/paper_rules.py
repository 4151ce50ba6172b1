#!/usr/bin/env python3
"""The authors' lesion-wise rules, transcribed for a conformance test.

`prc_records`, `get_intersection_stat_dice_id` and `get_prc` follow
neuro-ml/inverse_weighting `iw/metric.py` line by line, with numpy only:
skimage's `label` (full connectivity in 3-D) becomes scipy.ndimage.label
with a 3x3x3 structure, the pandas filters become list comprehensions, and
dpipe's `fraction` (1 when the denominator is 0) and `dice_score` are
written out.

    paper_rules.py make DIR SEED     # generated cases: DIR/truth, DIR/pred
    paper_rules.py score DIR         # the authors' records and curve, as JSON
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

FULL = np.ones((3, 3, 3), dtype=bool)


def label(mask):
    return ndimage.label(mask, structure=FULL)


def get_pred(x, threshold=0.5):
    return x > threshold


def fraction(numerator, denominator, empty_val=1.0):
    return numerator / denominator if denominator != 0 else empty_val


def dice_score(x, y):
    return fraction(2 * np.sum(x & y), np.sum(x) + np.sum(y))


def get_intersection_stat_dice_id(cc_mask, one_cc, pred=None):
    hit_components = np.unique(cc_mask[one_cc])
    hit_components = hit_components[hit_components != 0]
    hit_max, hit_dice, hit_id = [], [], []
    for n in hit_components:
        cc_mask_hit_one = cc_mask == n
        hit_dice.append(dice_score(cc_mask_hit_one, one_cc))
        hit_id.append(n)
        hit_max.append(1.0 if pred is None else float(np.max(pred[cc_mask_hit_one])))
    if len(hit_dice) == 0:
        return 0.0, 0.0, None
    max_idx = int(np.argmax(hit_dice))
    return hit_max[max_idx], float(np.max(hit_dice)), int(hit_id[max_idx]), hit_dice


def prc_records(segm, pred):
    segm_split, segm_n = label(get_pred(segm))
    pred_split, pred_n = label(get_pred(pred))
    records = []
    for n in range(1, segm_n + 1):
        segm_cc = segm_split == n
        r = get_intersection_stat_dice_id(pred_split, segm_cc, pred)
        stat, dice = r[0], r[1]
        ties = len(r) == 4 and sum(d == dice for d in r[3]) > 1
        records.append({"is_tum": True, "voxels": int(segm_cc.sum()), "hit_dice": dice,
                        "hit_stat": stat, "self_stat": 1.0, "tie": bool(ties)})
    for n in range(1, pred_n + 1):
        pred_cc = pred_split == n
        r = get_intersection_stat_dice_id(segm_split, pred_cc)
        records.append({"is_tum": False, "voxels": int(pred_cc.sum()), "hit_dice": r[1],
                        "hit_stat": r[0], "self_stat": float(np.max(pred[pred_cc])), "tie": False})
    return records


def get_prc(records, thresholds, dice_th=0):
    precision, recall, total_fp = [], [], []
    for th in thresholds:
        th_df = [r for r in records if r["self_stat"] >= th]
        target_df = [r for r in th_df if r["is_tum"]]
        pred_df = [r for r in th_df if not r["is_tum"]]
        fp = len([r for r in pred_df if r["hit_dice"] <= dice_th and r["self_stat"] > th])
        tp = len([r for r in target_df if r["hit_dice"] > dice_th and r["hit_stat"] >= th])
        fn = len([r for r in target_df if r["hit_dice"] <= dice_th or r["hit_stat"] < th])
        precision.append(fraction(tp, tp + fp))
        recall.append(fraction(tp, tp + fn))
        total_fp.append(fp)
    return {"precision": precision, "recall": recall, "totalFP": total_fp}


def blob(shape, centre, radii, rng):
    """An ellipsoid with a lumpy surface."""
    z = np.indices(shape).astype(float)
    d = sum(((z[a] - centre[a]) / radii[a]) ** 2 for a in range(3))
    lump = 0.15 * np.sin(z[0] * rng.uniform(0.5, 1.5)) * np.cos(z[1] * rng.uniform(0.5, 1.5))
    return d <= 1.0 + lump


def make(root, seed):
    rng = np.random.default_rng(seed)
    shape = (40, 36, 30)
    aff = np.diag([1.0, 1.0, 1.5, 1.0])
    os.makedirs(os.path.join(root, "truth"), exist_ok=True)
    os.makedirs(os.path.join(root, "pred"), exist_ok=True)
    for c in range(8):
        truth = np.zeros(shape, np.uint16)
        prob = rng.uniform(0.0, 0.3, shape)
        for lid in range(1, int(rng.integers(1, 6)) + 1):
            centre = rng.uniform(5, np.array(shape) - 5)
            radii = rng.uniform(1.0, 4.5, 3)
            m = blob(shape, centre, radii, rng)
            truth[m & (truth == 0)] = lid
            kind = rng.integers(0, 4)
            if kind == 0:  # found, shifted and resized
                pm = blob(shape, centre + rng.uniform(-1.5, 1.5, 3), radii * rng.uniform(0.7, 1.3, 3), rng)
                prob[pm] = rng.uniform(0.55, 0.99)
            elif kind == 1:  # split in two pieces of different confidence
                pm = blob(shape, centre, radii * 1.1, rng)
                cut = np.indices(shape)[0] < centre[0]
                prob[pm & cut] = rng.uniform(0.55, 0.99)
                prob[pm & ~cut & (np.indices(shape)[0] > centre[0] + 1)] = rng.uniform(0.55, 0.99)
            elif kind == 2:  # a faint one: below 0.5 except a core
                pm = blob(shape, centre, radii, rng)
                prob[pm] = 0.45
                prob[blob(shape, centre, radii * 0.5, rng)] = rng.uniform(0.5, 0.7)
            # kind 3: missed
        for _ in range(int(rng.integers(0, 4))):  # false positives
            centre = rng.uniform(4, np.array(shape) - 4)
            prob[blob(shape, centre, rng.uniform(0.8, 2.5, 3), rng)] = rng.uniform(0.5, 0.99)
        # Two touching truth instances (merged by the paper's binary truth).
        if c % 3 == 0:
            truth[2:6, 2:6, 2:6] = 20
            truth[6:9, 2:6, 2:6] = 21
        nib.save(nib.Nifti1Image(truth, aff), os.path.join(root, "truth", f"case{c}.nii.gz"))
        nib.save(nib.Nifti1Image(prob.astype(np.float32), aff), os.path.join(root, "pred", f"case{c}.nii.gz"))


def score(root):
    thresholds = 1 / (1 + np.exp(-np.linspace(0, 5, num=51)))
    cases, pooled = {}, []
    for f in sorted(os.listdir(os.path.join(root, "truth"))):
        name = f.replace(".nii.gz", "")
        segm = np.asarray(nib.load(os.path.join(root, "truth", f)).dataobj).astype(np.float32)
        pred = np.asarray(nib.load(os.path.join(root, "pred", f)).dataobj).astype(np.float32)
        rec = prc_records(segm, pred)
        cases[name] = rec
        pooled.extend(rec)
    prc = get_prc(pooled, thresholds)
    print(json.dumps({"cases": cases, "prc": prc, "thresholds": thresholds.tolist()}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    else:
        score(sys.argv[2])
