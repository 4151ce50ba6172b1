#!/usr/bin/env python3
"""BraTS 2023 lesion-wise rules and panoptica, for a conformance test.

`lesion_wise` transcribes `get_LesionWiseScores` and the score arithmetic of
`get_LesionWiseResults` of rachitsaluja/BraTS-2023-Metrics `eval.py`
(cc3d components, scipy dilation with generate_binary_structure(3, 2)),
with one substitution: HD95 is panoptica's `_compute_hausdorff_distance95`
(MedPy's definition) instead of DeepMind's surface_distance, as in
delineate (docs/evaluation.md). RQ, SQ and PQ come from panoptica's own
evaluator (semantic input, connected components, naive matching at IoU 0.5).

    brats_rules.py DIR mets|men      # DIR/truth, DIR/pred as paper_rules.py makes them
"""
import json
import os
import sys

import cc3d
import nibabel as nib
import numpy as np
import scipy.ndimage
from panoptica import (ConnectedComponentsInstanceApproximator, InputType, NaiveThresholdMatching,
                       Panoptica_Evaluator)
from panoptica.metrics.hausdorff_distance import _compute_hausdorff_distance95

SETTINGS = {"mets": (1, 2), "men": (1, 50)}


def dice(im1, im2):
    im1, im2 = np.asarray(im1).astype(bool), np.asarray(im2).astype(bool)
    return 2.0 * np.logical_and(im1, im2).sum() / (im1.sum() + im2.sum())


def hd95(gt, pred, spacing):
    if not gt.any() or not pred.any():
        return np.inf
    return float(_compute_hausdorff_distance95(gt.astype(bool), pred.astype(bool), voxelspacing=spacing))


def lesion_wise(pred_mat, gt_mat, spacing, dil_factor, thresh):
    sx, sy, sz = spacing
    full_dice = 1.0 if (not gt_mat.any() and not pred_mat.any()) else dice(pred_mat, gt_mat)
    struct = scipy.ndimage.generate_binary_structure(3, 2)
    gt_cc = cc3d.connected_components(gt_mat, connectivity=26)
    pred_cc = cc3d.connected_components(pred_mat, connectivity=26)
    gt_dil = scipy.ndimage.binary_dilation(gt_mat, structure=struct, iterations=dil_factor)
    gt_dil_cc = cc3d.connected_components(gt_dil, connectivity=26)
    combined = np.zeros_like(gt_dil_cc)
    for comp in range(1, np.max(gt_dil_cc) + 1):
        tmp = np.zeros_like(gt_dil_cc)
        tmp[gt_dil_cc == comp] = 1
        tmp = gt_cc * tmp
        np.place(tmp, tmp > 0, comp)
        combined += tmp
    tp, rows = [], []
    for comp in range(1, np.max(combined) + 1):
        gt_tmp = (combined == comp).astype(np.uint8)
        gt_tmp_dil = scipy.ndimage.binary_dilation(gt_tmp, structure=struct, iterations=dil_factor)
        vol = np.sum(gt_tmp) * sx * sy * sz
        inter = np.unique(pred_cc * gt_tmp_dil)
        inter = inter[inter != 0]
        tp.extend(inter.tolist())
        pred_tmp = np.isin(pred_cc, inter).astype(np.uint8)
        d = dice(pred_tmp, gt_tmp)
        h = hd95(gt_tmp, pred_tmp, spacing)
        rows.append((len(inter), vol, d, 374.0 if np.isinf(h) else h))
    fp = np.unique(pred_cc[np.isin(pred_cc, tp + [0], invert=True)])
    big = [r for r in rows if r[1] > thresh]
    denom = len(big) + len(fp)
    lw_dice = np.sum([r[2] for r in big]) / denom if denom else np.nan
    lw_hd = (np.sum([r[3] for r in big]) + len(fp) * 374) / denom if denom else np.nan
    if np.isnan(lw_dice):
        lw_dice = 1.0
    if np.isnan(lw_hd):
        lw_hd = 0.0
    return {
        "lesionwise_dice": float(lw_dice), "lesionwise_hd95": float(lw_hd),
        "tp": len([r for r in big if r[0] > 0]), "fn": len([r for r in big if r[0] == 0]),
        "fp": int(len(fp)), "legacy_dice": float(full_dice),
    }


def main(root, challenge):
    dil, thresh = SETTINGS[challenge]
    ev = Panoptica_Evaluator(expected_input=InputType.SEMANTIC,
                             instance_approximator=ConnectedComponentsInstanceApproximator(),
                             instance_matcher=NaiveThresholdMatching(), verbose=False)
    out = {}
    for f in sorted(os.listdir(os.path.join(root, "truth"))):
        name = f.replace(".nii.gz", "")
        t = nib.load(os.path.join(root, "truth", f))
        spacing = tuple(float(z) for z in t.header.get_zooms())
        gt = (np.asarray(t.dataobj) > 0).astype(np.uint8)
        pred = (np.asarray(nib.load(os.path.join(root, "pred", f)).dataobj) > 0.5).astype(np.uint8)
        r = lesion_wise(pred, gt, spacing, dil, thresh)
        p = ev.evaluate(pred, gt, verbose=False)["ungrouped"]
        r.update({"rq": float(p.rq), "sq": float(p.sq), "pq": float(p.pq)})
        out[name] = r
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
