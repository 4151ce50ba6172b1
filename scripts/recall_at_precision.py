#!/usr/bin/env python3
"""Recall by lesion size at matched lesion-wise precision, from the
`lesions.csv` and `predictions.csv` that `delineate evaluate` writes.

For each experiment and each target precision, the most lenient confidence
threshold whose precision (matching components / all components) reaches
the target is chosen, and the recall of lesions < 5 mm, 5-10 mm, 10-20 mm and
>= 20 mm there is printed (Markdown table).

    python3 scripts/recall_at_precision.py REPORT [--precision 0.5 0.7 0.9]
"""
import argparse
import csv
import os
from collections import defaultdict

BUCKETS = [(0, 5, "< 5 mm"), (5, 10, "5-10 mm"), (10, 20, "10-20 mm"), (20, 1e9, ">= 20 mm")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--precision", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    a = ap.parse_args()
    lesions, comps = defaultdict(list), defaultdict(list)
    with open(os.path.join(a.report, "lesions.csv")) as f:
        for r in csv.DictReader(f):
            conf = float(r["hit_confidence"]) if r["hit"] == "1" else -1.0
            lesions[r["experiment"]].append((float(r["diameter_mm"]), conf))
    with open(os.path.join(a.report, "predictions.csv")) as f:
        for r in csv.DictReader(f):
            comps[r["experiment"]].append((float(r["confidence"]), r["false_positive"] == "0"))
    print("| experiment | target precision | threshold | precision | " + " | ".join(f"recall {b[2]} (n)" for b in BUCKETS) + " |")
    print("|---|---|---|---|" + "---|" * len(BUCKETS))
    for e in sorted(lesions):
        thresholds = sorted({c for c, _ in comps[e]})
        for target in a.precision:
            chosen = None
            for t in thresholds:  # ascending: the first that reaches the target is the most lenient
                kept = [ok for c, ok in comps[e] if c >= t]
                if kept and sum(kept) / len(kept) >= target:
                    chosen = (t, sum(kept) / len(kept))
                    break
            if chosen is None:
                print(f"| {e} | {target} | – | – |" + " – |" * len(BUCKETS))
                continue
            t, p = chosen
            cells = []
            for lo, hi, _ in BUCKETS:
                sel = [c for d, c in lesions[e] if lo <= d < hi]
                hit = sum(1 for c in sel if c >= t)
                cells.append(f"{hit / len(sel):.2f} ({len(sel)})" if sel else "– (0)")
            print(f"| {e} | {target} | {t:.3f} | {p:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
