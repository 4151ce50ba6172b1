#!/usr/bin/env python3
"""Benchmark: writing an RTSTRUCT for a 256^3 mask with 20 lesions.

delineate (`rtstruct write`, one ROI per label) against rt-utils (PyPI,
`RTStructBuilder.create_new` + `add_roi` per lesion + `save`) on the same
DICOM series and mask, in the same run (best of 3; both include reading
the series). Then both files are rasterised back by plastimatch
(--xor-contours) and compared with the mask: the voxels each one loses.

usage: bench/rtstruct_write.py [--delineate target/release/delineate] [--work DIR]
Needs: plastimatch, nibabel, pydicom, and rt-utils (installed by this script
from PyPI if missing). Prints a table; not a test.
"""
import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np

N, LESIONS = 256, 20


def ensure_rt_utils():
    try:
        import rt_utils  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "rt-utils==1.2.7"], check=True)


def make_case(work, delineate):
    src, dcm, grid, mask = (os.path.join(work, n) for n in ("img.nii.gz", "dcm", "grid.nii.gz", "mask.nii.gz"))
    if not os.path.isdir(dcm):
        rng = np.random.default_rng(3)
        img = (rng.random((N, N, N)) * 100).astype(np.int16)
        aff = np.diag([0.9, 0.9, 1.0, 1.0])
        aff[:3, 3] = [-115, -115, -128]
        nib.save(nib.Nifti1Image(img, aff), src)
        subprocess.run(["plastimatch", "convert", "--input", src, "--output-dicom", dcm, "--modality", "MR"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([delineate, "convert", dcm, grid], check=True, stdout=subprocess.DEVNULL)
    g = nib.load(grid)
    m = np.zeros(g.shape, np.uint8)
    rng = np.random.default_rng(7)
    idx = np.indices(g.shape)
    for lab in range(1, LESIONS + 1):
        r = float(np.exp(rng.uniform(np.log(1.0), np.log(15.0))))  # 2–30 mm lesions
        c = rng.uniform(30, N - 30, 3)
        m[((idx - c.reshape(3, 1, 1, 1)) ** 2).sum(0) <= r * r] = lab
    nib.save(nib.Nifti1Image(m, g.affine), mask)
    return dcm, mask, m


def best(fn, n=3):
    t = []
    for _ in range(n):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return min(t)


def rasterised_back(rt, dcm, work, tag, mask):
    out = os.path.join(work, "pl_" + tag)
    subprocess.run(["plastimatch", "convert", "--input", rt, "--referenced-ct", dcm, "--output-prefix", out,
                    "--prefix-format", "nii.gz", "--xor-contours"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mi = nib.load(mask)
    total = np.zeros(mi.shape, bool)
    for f in glob.glob(os.path.join(out, "*.nii.gz")):
        a = nib.as_closest_canonical(nib.load(f))
        total |= np.asarray(a.dataobj) > 0
    truth = np.asarray(nib.as_closest_canonical(mi).dataobj) > 0
    return int((truth & ~total).sum()), int((total & ~truth).sum()), int(truth.sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delineate", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "delineate"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "delineate-bench-rtstruct"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ensure_rt_utils()
    from rt_utils import RTStructBuilder

    dcm, mask, m = make_case(a.work, a.delineate)
    ours = os.path.join(a.work, "ours.dcm")
    theirs = os.path.join(a.work, "rtutils.dcm")

    stage = {}

    def run_ours():
        r = subprocess.run([a.delineate, "-v", "rtstruct", "write", "--mask", mask, "--reference", dcm, "--out", ours],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in r.stderr.splitlines():
            if "traced and wrote" in line:
                t = float(re.sub(r"\x1b\[[0-9;]*m", "", line).split("seconds=")[1].split()[0])
                stage["ours"] = min(stage.get("ours", 1e9), t)

    # rt-utils wants (rows, columns, slices) with slices in its own order
    # (ascending ImagePositionPatient z for this axial series) = our (j, i, k).
    def run_rt_utils():
        rt = RTStructBuilder.create_new(dicom_series_path=dcm)
        t = time.perf_counter()
        for lab in range(1, LESIONS + 1):
            rt.add_roi(mask=np.transpose(m == lab, (1, 0, 2)), name=f"Lesion {lab}")
        rt.save(theirs)
        stage["theirs"] = min(stage.get("theirs", 1e9), time.perf_counter() - t)

    t_ours, t_theirs = best(run_ours), best(run_rt_utils)
    print(f"RTSTRUCT for a {N}^3 mask with {LESIONS} lesions ({int((m > 0).sum())} voxels), best of 3")
    print(f"{'method':<30} {'whole job s':>11} {'ratio':>7} {'contours+write s':>17} {'ratio':>7} {'lost voxels':>15} {'extra':>6}")
    rows = (("rt-utils 1.2.7 (anchor)", t_theirs, stage["theirs"], theirs), ("delineate rtstruct write", t_ours, stage["ours"], ours))
    for name, t, st, f in rows:
        lost, extra, total = rasterised_back(f, dcm, a.work, os.path.basename(f), mask)
        print(f"{name:<30} {t:11.3f} {t_theirs / t:6.1f}x {st:17.3f} {stage['theirs'] / st:6.1f}x {lost:>6} of {total:<6} {extra:>6}")
    print("whole job: reading the series and the mask included; contours+write: rt-utils add_roi x20 + save,"
          " delineate's tracing + writing stage (from -v)")


if __name__ == "__main__":
    sys.exit(main())
