#!/usr/bin/env python3
"""One row per (arm, test set) of the small-lesion study (issue 27): recall
by lesion size at 0.5, 1 and 2 false positives per case, average precision,
and median Dice of the lesions found, from the lesions.csv and
predictions.csv that `delineate evaluate --score probability` writes.

A lesion counts as found at threshold t when its best-Dice component has
confidence >= t (the paper's rules); false positives at t are components
overlapping no lesion with confidence > t. For each target rate the most
lenient threshold with at most that many false positives per case is used.

    scripts/study_table.py ARM=REPORT_DIR[:CASES] ...
"""
import csv
import json
import os
import sys

import numpy as np

BUCKETS = [(0, 3, "<3"), (3, 5, "3-5"), (5, 10, "5-10"), (10, 1e9, ">=10")]
RATES = [0.5, 1.0, 2.0]


def row(name, report):
    lesions, fps, cases = [], [], set()
    with open(os.path.join(report, "lesions.csv")) as f:
        for r in csv.DictReader(f):
            cases.add(r["case"])
            conf = float(r["hit_confidence"]) if r["hit"] in ("1", "true") and r["hit_confidence"] else -1.0
            dice = float(r["best_dice"]) if r["best_dice"] else 0.0
            lesions.append((float(r["diameter_mm"]), conf, dice))
    with open(os.path.join(report, "predictions.csv")) as f:
        for r in csv.DictReader(f):
            cases.add(r["case"])
            if r["false_positive"] in ("1", "true"):
                fps.append(float(r["confidence"]))
    n = max(1, len(cases))
    fps = np.sort(np.array(fps))[::-1]
    cells = []
    for rate in RATES:
        allowed = int(np.floor(rate * n + 1e-9))
        # FP at t are those with confidence > t: t = the (allowed+1)-th largest.
        t = fps[allowed] if len(fps) > allowed else 0.0
        per = []
        for lo, hi, _ in BUCKETS:
            sel = [c for d, c, _ in lesions if lo <= d < hi]
            per.append(f"{sum(1 for c in sel if c >= max(t, 1e-9)) / len(sel):.2f}" if sel else "–")
        cells.append("/".join(per))
    ap = "–"
    summary = os.path.join(report, "summary.json")
    if os.path.exists(summary):
        try:
            s = json.load(open(summary))
            e = s["experiments"][0] if "experiments" in s else s
            ap = f"{e.get('average_precision', e.get('ap', float('nan'))):.3f}"
        except Exception:
            pass
    dice = []
    for lo, hi, _ in BUCKETS:
        d = [x for dd, c, x in lesions if lo <= dd < hi and c >= 0]
        dice.append(f"{np.median(d):.2f}" if d else "–")
    counts = "/".join(str(sum(1 for d, _, _ in lesions if lo <= d < hi)) for lo, hi, _ in BUCKETS)
    return f"| {name} | {n}, {counts} | " + " | ".join(cells) + f" | {ap} | {'/'.join(dice)} |"


def main():
    print("| arm, set | cases, lesions " + "/".join(b[2] for b in BUCKETS) + " mm | recall at 0.5 FP/case | at 1 | at 2 | AP | median Dice of found |")
    print("|---|---|---|---|---|---|---|")
    for spec in sys.argv[1:]:
        name, report = spec.split("=", 1)
        print(row(name, report))


if __name__ == "__main__":
    main()
