#!/usr/bin/env python3
"""Montage of images with a mask's outline (red) and, optionally, a second
mask (green): three orthogonal slices through the mask's centre per case.

    scripts/mask_montage.py OUT.png CASE_DIR[:MASK[:MASK2]] ...

MASK defaults to intracranial.nii.gz in the case folder; the image is
CASE_DIR/image.nii.gz. Used for docs/images/intracranial-*.png.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from scipy import ndimage


def load(p):
    img = nib.as_closest_canonical(nib.load(p))
    return np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()[:3]


def outline(m):
    m = m > 0
    return m & ~ndimage.binary_erosion(m)


def main():
    out, cases = sys.argv[1], sys.argv[2:]
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)), squeeze=False)
    for row, spec in enumerate(cases):
        parts = spec.split(":")
        d = parts[0]
        mask_p = parts[1] if len(parts) > 1 and parts[1] else os.path.join(d, "intracranial.nii.gz")
        img, zooms = load(os.path.join(d, "image.nii.gz"))
        m, _ = load(mask_p)
        m2 = load(parts[2])[0] if len(parts) > 2 else None
        c = [int(round(v)) for v in ndimage.center_of_mass(m > 0)]
        title = os.path.basename(os.path.normpath(d))
        meta = os.path.join(d, "lesions.json")
        if os.path.exists(meta):
            with open(meta) as f:
                j = json.load(f)
            if "acquisition" in j:
                title += f" ({j.get('template', '')}, {j['acquisition']['grid']})"
        lo, hi = np.percentile(img[img > 0], [1, 99.5]) if (img > 0).any() else (0, 1)
        for col, axis in enumerate([2, 1, 0]):
            sl = [slice(None)] * 3
            sl[axis] = c[axis]
            a = np.take(img, c[axis], axis=axis).T
            o = np.take(outline(m), c[axis], axis=axis).T
            asp = [zooms[i] for i in range(3) if i != axis]
            ax = axes[row][col]
            ax.imshow(a, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=asp[1] / asp[0])
            rgba = np.zeros(o.shape + (4,))
            rgba[o] = [1, 0.1, 0.1, 1]
            if m2 is not None:
                o2 = np.take(outline(m2), c[axis], axis=axis).T
                rgba[o2] = [0.1, 1, 0.1, 1]
            ax.imshow(rgba, origin="lower", aspect=asp[1] / asp[0])
            ax.set_axis_off()
            if col == 0:
                ax.set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(out, dpi=70)


if __name__ == "__main__":
    main()
