"""Conformance of `delineate evaluate` with picai-eval (PyPI).

Usage: python3 picai_conformance.py make DIR
         writes DIR/{truth,pred} (detected, missed and false-positive lesions),
         DIR/{split_truth,split_pred} (lesions split into two components) and
         DIR/{merge_truth,merge_pred} (two lesions covered by one component)
       python3 picai_conformance.py compare DIR REPORT SPLIT_REPORT MERGE_REPORT
Prints one JSON line with the comparison.
"""
import csv
import json
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

N = 40
S26 = np.ones((3, 3, 3))


def ball(shape, c, r):
    z = np.indices(shape).astype(float)
    return ((z[0] - c[0]) ** 2 + (z[1] - c[1]) ** 2 + (z[2] - c[2]) ** 2) <= r * r


def make(root):
    rng = np.random.default_rng(7)
    for sub in ("truth", "pred", "split_truth", "split_pred", "merge_truth", "merge_pred"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    for c in range(14):
        truth = np.zeros((N, N, N), np.uint8)
        prob = np.zeros((N, N, N), np.float32)
        centres = []
        for _ in range(int(rng.integers(0, 4))):
            for _try in range(50):
                ctr = rng.integers(6, N - 6, size=3)
                r = float(rng.uniform(1.5, 4.5))
                if all(np.linalg.norm(ctr - c2) > r + r2 + 6 for c2, r2 in centres):
                    centres.append((ctr, r))
                    break
        for ctr, r in centres:
            truth |= ball(truth.shape, ctr, r).astype(np.uint8)
            u = rng.random()
            if u < 0.8:  # detected, partly shifted, smooth profile peaking at conf
                conf = float(rng.uniform(0.55, 0.99))
                c2 = ctr + rng.integers(-1, 2, size=3)
                d = np.sqrt(((np.indices(truth.shape) - c2[:, None, None, None]) ** 2).sum(0))
                blob = np.clip(conf - 0.1 * d / max(r, 1), 0, 1) * (d <= r + 0.5)
                prob = np.maximum(prob, blob.astype(np.float32))
        for _ in range(int(rng.integers(0, 3))):  # false positives away from lesions
            for _try in range(50):
                ctr = rng.integers(3, N - 3, size=3)
                if all(np.linalg.norm(ctr - c2) > r2 + 6 for c2, r2 in centres):
                    prob[ball(prob.shape, ctr, float(rng.uniform(1, 2.5)))] = float(rng.uniform(0.51, 0.95))
                    break
        nib.save(nib.Nifti1Image(truth, aff), os.path.join(root, "truth", f"c{c:02d}.nii.gz"))
        nib.save(nib.Nifti1Image(prob, aff), os.path.join(root, "pred", f"c{c:02d}.nii.gz"))
    # Split lesions: two components on one lesion, the smaller one closer to
    # its centre but less confident.
    for c in range(4):
        truth = ball((N, N, N), (20, 20, 20), 4.0 + c * 0.5).astype(np.uint8)
        prob = np.zeros((N, N, N), np.float32)
        prob[ball(prob.shape, (14 - c, 20, 20), 3.0)] = 0.9
        prob[ball(prob.shape, (21, 20, 20), 1.0)] = 0.7
        nib.save(nib.Nifti1Image(truth, aff), os.path.join(root, "split_truth", f"s{c}.nii.gz"))
        nib.save(nib.Nifti1Image(prob, aff), os.path.join(root, "split_pred", f"s{c}.nii.gz"))
    # One prediction covering two lesions: picai matches one-to-one.
    truth = np.zeros((N, N, N), np.uint8)
    truth[10:14, 10:14, 10:14] = 1
    truth[18:22, 10:14, 10:14] = 1
    prob = np.zeros((N, N, N), np.float32)
    prob[10:22, 10:14, 10:14] = 0.9
    nib.save(nib.Nifti1Image(truth, aff), os.path.join(root, "merge_truth", "m.nii.gz"))
    nib.save(nib.Nifti1Image(prob, aff), os.path.join(root, "merge_pred", "m.nii.gz"))


def detection_map(prob):
    """Components of prob > 0.5 (26-connected), each at its maximum: what
    picai expects as y_det."""
    lab, n = ndi.label(prob > 0.5, structure=S26)
    out = np.zeros(prob.shape, np.float32)
    for i in range(1, n + 1):
        m = lab == i
        out[m] = prob[m].max()
    return out


def picai(root, tdir, pdir):
    from picai_eval import evaluate

    names = sorted(f[: -len(".nii.gz")] for f in os.listdir(os.path.join(root, tdir)))
    y_true = [np.asarray(nib.load(os.path.join(root, tdir, f"{n}.nii.gz")).dataobj) for n in names]
    y_det = [detection_map(np.asarray(nib.load(os.path.join(root, pdir, f"{n}.nii.gz")).dataobj)) for n in names]
    return names, evaluate(y_det=y_det, y_true=y_true, subject_list=names, min_overlap=1e-9,
                           overlap_func="DSC", num_parallel_calls=1)


def ours(report):
    hits, fps, confs = {}, {}, {}
    with open(os.path.join(report, "lesions.csv")) as f:
        for row in csv.DictReader(f):
            hits.setdefault(row["case"], 0)
            confs.setdefault(row["case"], [])
            if row["hit"] == "1":
                hits[row["case"]] += 1
                confs[row["case"]].append(float(row["hit_confidence"]))
    with open(os.path.join(report, "predictions.csv")) as f:
        for row in csv.DictReader(f):
            fps.setdefault(row["case"], 0)
            fps[row["case"]] += int(row["false_positive"])
    return hits, fps, confs


def compare(root, report, split_report, merge_report):
    names, m = picai(root, "truth", "pred")
    hits, fps, confs = ours(report)
    out = {"cases": len(names), "lesions": 0, "hit_mismatch": [], "fp_mismatch": [], "conf_mismatch": []}
    for n in names:
        res = m.lesion_results[n]
        tp = [c for is_l, c, ov in res if is_l == 1 and ov > 0]
        fp = [c for is_l, c, ov in res if is_l == 0]
        out["lesions"] += sum(1 for is_l, *_ in res if is_l == 1)
        if len(tp) != hits.get(n, 0):
            out["hit_mismatch"].append(n)
        if len(fp) != fps.get(n, 0):
            out["fp_mismatch"].append(n)
        if not np.allclose(sorted(tp), sorted(confs.get(n, [])), atol=1e-5):
            out["conf_mismatch"].append(n)
    rep = json.load(open(os.path.join(report, "report.json")))["experiments"][0]
    rates = rep["fp_rates"]
    out["sens_picai"] = [float(m.lesion_TPR_at_FPR(r)) for r in rates]
    out["sens_ours"] = rep["summary"]["sensitivity_step"]
    out["ap_picai"] = float(m.AP)
    out["ap_ours"] = rep["summary"]["average_precision"]
    # Our AP under picai's rules: one entry per hit lesion (its confidence),
    # one per false positive; extra pieces of a split lesion left out.
    entries = [(1, c) for n in names for c in confs.get(n, [])]
    with open(os.path.join(report, "predictions.csv")) as f:
        entries += [(0, float(r["confidence"])) for r in csv.DictReader(f) if r["false_positive"] == "1"]
    entries.sort(key=lambda e: -e[1])
    total = out["lesions"]
    ap, tp, seen, last_r = 0.0, 0, 0, 0.0
    i = 0
    while i < len(entries):
        j = i
        while j < len(entries) and entries[j][1] == entries[i][1]:
            tp += entries[j][0]
            seen += 1
            j += 1
        r = tp / total
        ap += (r - last_r) * tp / seen
        last_r = r
        i = j
    out["ap_ours_picai_rules"] = ap
    names_s, ms = picai(root, "split_truth", "split_pred")
    hs, fs, cs = ours(split_report)
    out["split_hits_equal"] = all(sum(1 for is_l, c, ov in ms.lesion_results[n] if is_l == 1 and ov > 0) == hs[n] for n in names_s)
    out["split_fp_equal"] = all(sum(1 for is_l, *_ in ms.lesion_results[n] if is_l == 0) == fs.get(n, 0) for n in names_s)
    out["split_conf_picai"] = [[c for is_l, c, ov in ms.lesion_results[n] if is_l == 1] for n in names_s]
    out["split_conf_ours"] = [cs[n] for n in names_s]
    names_m, mm = picai(root, "merge_truth", "merge_pred")
    res = mm.lesion_results[names_m[0]]
    out["merge_picai_hits"] = sum(1 for is_l, c, ov in res if is_l == 1 and ov > 0)
    out["merge_ours_hits"] = ours(merge_report)[0]["m"]
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        compare(*sys.argv[2:6])
