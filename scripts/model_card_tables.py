#!/usr/bin/env python3
"""The model card's tables from a `delineate evaluate` report: recall as
delivered and at <= 0.5 false positives per case, by size (with >= 5 mm
combined) and by kind, median Dice of found lesions, AP with its bootstrap
interval, and the BraTS 2023 lesion-wise metrics when present.

  scripts/model_card_tables.py REPORT_DIR [TITLE]
"""
import json
import os
import sys


def f(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"


def main():
    rep = json.load(open(os.path.join(sys.argv[1], "report.json")))
    title = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    e = rep["experiments"][0]
    s, ci = e["summary"], e["intervals"]
    at = e["fp_rates"].index(0.5)
    print(f"\n### {title}: {s['cases']} cases, {s['lesions']} lesions")
    print(f"As delivered: recall {f(s['recall'])} [{f(ci['recall']['lo'])}, {f(ci['recall']['hi'])}], "
          f"{f(s['fp_per_case'])} false positives per case; AP {f(s['average_precision'], 3)} "
          f"[{f(ci['average_precision']['lo'], 3)}, {f(ci['average_precision']['hi'], 3)}]; "
          f"recall at <= 0.5 FP/case {f(s['sensitivity_step'][at])}; median Dice of found {f(s['dice_median'])}")
    print("\n| lesions | n | recall (delivered) | recall at ≤ 0.5 FP/case | median Dice of found |")
    print("|---|---|---|---|---|")
    big = [b for b in s["by_size"] if not b["name"].startswith("<")]
    rows = list(s["by_size"])
    n5 = sum(b["lesions"] for b in big)
    if n5:
        rows.append({
            "name": "≥ 5 mm", "lesions": n5,
            "recall": sum((b["recall"] or 0) * b["lesions"] for b in big) / n5,
            "sensitivity_step": [None] * at + [sum((b["sensitivity_step"][at] or 0) * b["lesions"] for b in big) / n5],
            "dice_median": None,
        })
    for b in rows + s["by_kind"]:
        if b["lesions"] == 0:
            continue
        print(f"| {b['name']} | {b['lesions']} | {f(b['recall'])} | {f(b['sensitivity_step'][at])} | {f(b['dice_median'])} |")
    br = e.get("brats2023")
    if br:
        print(f"\nBraTS 2023 ({br['challenge']}) lesion-wise Dice {f(br['lesionwise_dice'], 3)}, "
              f"HD95 {f(br['lesionwise_hd95'], 1)} mm, TP {br['tp']}, FN {br['fn_']}, FP {br['false_positives']}; "
              f"panoptica RQ {f(br['rq'], 3)}, SQ {f(br['sq'], 3)}, PQ {f(br['pq'], 3)}")


if __name__ == "__main__":
    main()
