#!/usr/bin/env python3
"""Lesion-wise operating point from a `delineate evaluate` report: recall by
lesion size, false positives per case and Dice at a confidence threshold.

    # choose: the lowest threshold with at most 1 false positive per case
    python3 scripts/operating_point.py REPORT --max-fp 1
    # report at a fixed threshold (the one chosen on validation data)
    python3 scripts/operating_point.py REPORT --threshold 0.42

A lesion is found at threshold t when a matching component has confidence
>= t (its hit confidence); a false positive is a component with confidence
>= t that matches no lesion. Dice is each found lesion's best Dice with a
component (from the components the evaluation was run with:
`--component-threshold`). Prints a Markdown table per experiment and the
chosen threshold as JSON on the last line.
"""
import argparse
import csv
import json
import os
import statistics
from collections import defaultdict

BUCKETS = [(0, 2, "< 2 mm"), (2, 5, "2-5 mm"), (5, 10, "5-10 mm"), (10, 20, "10-20 mm"),
           (20, 1e9, ">= 20 mm"), (5, 1e9, ">= 5 mm"), (0, 1e9, "all")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--max-fp", type=float)
    g.add_argument("--threshold", type=float)
    a = ap.parse_args()
    lesions, comps, cases = defaultdict(list), defaultdict(list), defaultdict(set)
    with open(os.path.join(a.report, "lesions.csv")) as f:
        for r in csv.DictReader(f):
            conf = float(r["hit_confidence"]) if r["hit"] == "1" else -1.0
            lesions[r["experiment"]].append((float(r["diameter_mm"]), conf, float(r["best_dice"])))
            cases[r["experiment"]].add(r["case"])
    with open(os.path.join(a.report, "predictions.csv")) as f:
        for r in csv.DictReader(f):
            comps[r["experiment"]].append((float(r["confidence"]), r["false_positive"] == "1"))
            cases[r["experiment"]].add(r["case"])
    # Cases without lesions or components appear in neither CSV.
    with open(os.path.join(a.report, "report.json")) as f:
        counted = {x["name"]: x["cases"] for x in json.load(f)["experiments"]}
    chosen = {}
    for e in sorted(lesions):
        n_cases = counted.get(e, len(cases[e]))
        fp_at = lambda t: sum(1 for c, fp in comps[e] if fp and c >= t) / n_cases
        if a.threshold is not None:
            t = a.threshold
        else:
            cands = sorted({c for c, _ in comps[e]} | {1.0})
            t = next((c for c in cands if fp_at(c) <= a.max_fp), 1.0)
        chosen[e] = t
        print(f"\n{e}: threshold {t:.3f}, {fp_at(t):.2f} false positives per case ({n_cases} cases)\n")
        print("| lesions | n | found | recall | median Dice of found |")
        print("|---|---|---|---|---|")
        for lo, hi, name in BUCKETS:
            sel = [(c, d) for dia, c, d in lesions[e] if lo <= dia < hi]
            hit = [d for c, d in sel if c >= t]
            if not sel:
                continue
            md = f"{statistics.median(hit):.3f}" if hit else "–"
            print(f"| {name} | {len(sel)} | {len(hit)} | {len(hit) / len(sel):.2f} | {md} |")
    print(json.dumps(chosen))


if __name__ == "__main__":
    main()
