#!/usr/bin/env python3
"""Benchmark: reading a 256-slice 512x512 MR series (DICOM -> uncompressed NIfTI).

Compares, in the same run on the same files (page cache warm, best of 3):
  * anchor: reading the bytes only (`cat` of every file): the disk/page-cache limit
  * pydicom + nibabel: dcmread every file, sort along the normal, stack, save .nii
  * delineate convert (1 thread and all threads)
and, when the kernel lets us drop the page cache, a cold-cache run of each.

usage: bench/dicom_read.py [--delineate target/release/delineate] [--work DIR]
Prints a table of times, throughput and ratio to pydicom. Not a test.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import nibabel as nib
import numpy as np
import pydicom


def make_series(work):
    src = os.path.join(work, "big.nii.gz")
    out = os.path.join(work, "dcm")
    if os.path.isdir(out):
        return out
    colin = nib.load("/usr/share/mricron/templates/ch2.nii.gz")
    data = np.asarray(colin.dataobj).astype(np.int16)
    # 512x512x256 at 0.45x0.45x0.8 mm: Colin27 tiled/resampled by index (content is irrelevant to speed).
    idx = [np.linspace(0, data.shape[a] - 1, n).astype(int) for a, n in enumerate((512, 512, 256))]
    big = data[np.ix_(*idx)] * 7 + 3
    aff = np.diag([0.45, 0.45, 0.8, 1.0])
    aff[:3, 3] = [-115, -115, -100]
    nib.save(nib.Nifti1Image(big, aff), src)
    subprocess.run(["plastimatch", "convert", "--input", src, "--output-dicom", out, "--modality", "MR"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def drop_caches():
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def cat_all(folder):
    n = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                n += len(f.read())
    return n


def pydicom_read(folder, out):
    paths = [os.path.join(r, n) for r, _, ns in os.walk(folder) for n in ns]
    dss = [pydicom.dcmread(p) for p in paths]
    iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))
    vol = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss], axis=-1)
    nib.save(nib.Nifti1Image(vol.transpose(1, 0, 2), np.eye(4)), out)


def timed(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delineate", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "delineate"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "delineate-bench-dicom"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    folder = make_series(a.work)
    size_mb = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(folder) for n in ns) / 1e6
    out = os.path.join(a.work, "out.nii")

    def ours(threads):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        return lambda: subprocess.run([a.delineate, "convert", folder, out, "--dtype", "float32"], check=True,
                                      env=env, stdout=subprocess.DEVNULL)

    cases = [
        ("read bytes only (anchor: disk/page cache)", lambda: cat_all(folder)),
        ("pydicom + numpy + nibabel", lambda: pydicom_read(folder, out)),
        ("delineate convert, 1 thread", ours(1)),
        (f"delineate convert, {os.cpu_count()} threads", ours(os.cpu_count())),
    ]
    print(f"DICOM series: 256 files, 512x512, int16, {size_mb:.0f} MB; output uncompressed NIfTI float32")
    print(f"{'method':<44} {'warm s':>8} {'MB/s':>8} {'vs pydicom':>11} {'cold s':>8}")
    warm = {name: timed(fn) for name, fn in cases}
    cold = {}
    can_drop = drop_caches()
    for name, fn in cases:
        if can_drop:
            drop_caches()
            cold[name] = timed(fn, repeats=1)
    base = warm["pydicom + numpy + nibabel"]
    for name, _ in cases:
        c = f"{cold[name]:8.2f}" if name in cold else "     n/a"
        print(f"{name:<44} {warm[name]:8.2f} {size_mb / warm[name]:8.0f} {base / warm[name]:10.1f}x {c}")
    if not can_drop:
        print("(cold-cache column n/a: this kernel does not let us drop the page cache)")


if __name__ == "__main__":
    sys.exit(main())
