#!/usr/bin/env python3
"""The intracranial stage's numbers for docs/model-card.md (issue 32).

For held-out synthetic sets (seeds used nowhere else), each case is
segmented twice with MODEL (a lesion model with an intracranial stage):
with the stage and with --no-intracranial-mask. Printed per set:

- Dice of the predicted cavity (OUT/intracranial.nii.gz) against the
  target the case carries (CASE/intracranial.nii.gz), median and minimum;
- truth lesions lost to the stage (delivered without it, not with it), and
  truth lesions mostly outside the predicted cavity (kept or not), by kind;
- false-positive components per case outside the true cavity (centroid
  outside it), without and with the stage, and inside it (which the stage
  must leave alone);
- recall of delivered lesions without and with the stage.

    scripts/intracranial_card.py MODEL.dlm WORKDIR

Sets (written by `delineate synth` into WORKDIR when missing):
  train-1mm   training backgrounds, 1 mm, fresh seed       --seed 6101
  train-rand  training backgrounds, randomised grids        --seed 6202 --randomise
  mni-1mm     MNI152 (never in training), clinical grids     --seed 6303
  mni-rand    MNI152, randomised acquisitions                --seed 6404 --randomise
  train-1mm-fat   as train-1mm with 2-4 lesion-like nodules in scalp and
                  orbital fat per case   --seed 6505 --extracranial-lookalikes 2-4
  train-rand-fat  as train-rand with the same nodules   --seed 6606
(MNI152 is skull-stripped: it has no scalp or orbit to place nodules in.)
"""
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

SETS = [
    ("train-1mm", ["--seed", "6101", "--background", "all", "--grid", "1mm"]),
    ("train-rand", ["--seed", "6202", "--background", "all", "--randomise"]),
    ("mni-1mm", ["--seed", "6303", "--background", "mni152"]),
    ("mni-rand", ["--seed", "6404", "--background", "mni152", "--randomise"]),
    ("train-1mm-fat", ["--seed", "6505", "--background", "all", "--grid", "1mm",
                       "--extracranial-lookalikes", "2-4"]),
    ("train-rand-fat", ["--seed", "6606", "--background", "all", "--randomise",
                        "--extracranial-lookalikes", "2-4"]),
]
CASES = 8


def run(args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def load(p):
    return np.asarray(nib.load(p).dataobj)


def main():
    model, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    rows = []
    for name, args in SETS:
        data = os.path.join(work, name)
        if not os.path.isdir(data):
            run(["delineate", "synth", "--cases", str(CASES), "--out", data] + args)
        dice, lost, dropped, fp_out, fp_out_off, fp_in, fp_in_off = [], [], [], 0, 0, 0, 0
        found, found_off, n_lesions, removed, secs = 0, 0, 0, 0, []
        lost_kinds = {}
        for case in sorted(os.listdir(data)):
            cdir = os.path.join(data, case)
            if not os.path.isdir(cdir) or case.startswith("."):
                continue
            img = os.path.join(cdir, "image.nii.gz")
            outs = {}
            for tag, extra in (("on", []), ("off", ["--no-intracranial-mask"])):
                out = os.path.join(work, "seg", name, case + "-" + tag)
                if not os.path.exists(os.path.join(out, "lesions.json")):
                    run(["delineate", "segment", img, "--out", out, "--model", model, "--force"] + extra)
                outs[tag] = out
            res = json.load(open(os.path.join(outs["on"], "lesions.json")))
            for t in res["timings_s"]:
                if t["stage"] == "intracranial":
                    secs.append(t["seconds"])
            ic = res.get("intracranial") or {}
            removed += ic.get("removed_delivered", 0)
            truth_ic = load(os.path.join(cdir, "intracranial.nii.gz")) > 0
            pred_ic = load(os.path.join(outs["on"], "intracranial.nii.gz")) > 0
            dice.append(2 * (truth_ic & pred_ic).sum() / max(1, truth_ic.sum() + pred_ic.sum()))
            truth = load(os.path.join(cdir, "truth.nii.gz"))
            meta = json.load(open(os.path.join(cdir, "lesions.json")))
            kinds = {l["id"]: l["kind"] for l in meta["lesions"]}
            for lid in np.unique(truth[truth > 0]):
                les = truth == lid
                n_lesions += 1
                if (les & pred_ic).sum() < 0.5 * les.sum():
                    k = kinds.get(int(lid), "?")
                    lost_kinds[k] = lost_kinds.get(k, 0) + 1
                    lost.append(f"{case}:{lid}")
            hits = {}
            for tag in ("on", "off"):
                mask = load(os.path.join(outs[tag], "mask.nii.gz"))
                hit = set()
                hits[tag] = hit
                for comp in np.unique(mask[mask > 0]):
                    m = mask == comp
                    overl = np.unique(truth[m & (truth > 0)])
                    if len(overl):
                        hit.update(int(x) for x in overl)
                        continue
                    c = tuple(int(round(v)) for v in ndimage.center_of_mass(m))
                    outside = not truth_ic[c]
                    if tag == "on":
                        fp_out += outside
                        fp_in += not outside
                    else:
                        fp_out_off += outside
                        fp_in_off += not outside
                if tag == "on":
                    found += len(hit)
                else:
                    found_off += len(hit)
            dropped += [f"{case}:{l}" for l in sorted(hits["off"] - hits["on"])]
        n = len(dice)
        rows.append(
            f"| {name} | {n}, {n_lesions} | {np.median(dice):.3f} (min {min(dice):.3f}) | "
            f"{len(dropped)} | {len(lost)} {dict(sorted(lost_kinds.items())) if lost else ''} | "
            f"{fp_out_off / n:.2f} → **{fp_out / n:.2f}** | {fp_in_off / n:.2f} → {fp_in / n:.2f} | "
            f"{found_off / max(1, n_lesions):.2f} → {found / max(1, n_lesions):.2f} | "
            f"{np.median(secs):.2f} |"
        )
        if lost or dropped:
            print(f"{name}: mostly outside the cavity: {', '.join(lost)}; lost: {', '.join(dropped)}",
                  file=sys.stderr)
    print("| set | cases, lesions | cavity Dice, median (min) | lesions lost to the stage | "
          "lesions mostly outside the predicted cavity | "
          "FP/case outside the skull: without → with | FP/case inside: without → with | "
          "recall as delivered: without → with | stage time (s, median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
