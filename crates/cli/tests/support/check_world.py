"""Independent check of a NIfTI written from a DICOM series.

For sampled pixels of sampled DICOM files, compute the patient position
from the file's own ImagePositionPatient / ImageOrientationPatient /
PixelSpacing with pydicom, map it into the NIfTI with nibabel's affine, and
check that it lands on a voxel centre holding the same (rescaled) value.

usage: check_world.py DICOM_DIR NIFTI [MAX_FILES]
prints JSON: {"checked": n, "max_index_error": e, "value_mismatches": m}
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
import pydicom

dicom_dir, nifti = sys.argv[1], sys.argv[2]
max_files = int(sys.argv[3]) if len(sys.argv) > 3 else 12
img = nib.load(nifti)
data = np.asarray(img.dataobj, dtype=np.float64)
inv = np.linalg.inv(img.affine)
paths = []
for root, _, names in os.walk(dicom_dir):
    paths += [os.path.join(root, n) for n in names]
paths.sort()
step = max(1, len(paths) // max_files)
checked, max_err, mismatches = 0, 0.0, 0
for p in paths[::step]:
    try:
        ds = pydicom.dcmread(p)
    except Exception:
        continue
    if "PixelData" not in ds:
        continue
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    dr, dc = float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])
    px = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
        getattr(ds, "RescaleIntercept", 0) or 0
    )
    rows, cols = px.shape
    for r, c in [(0, 0), (rows - 1, cols - 1), (rows // 3, cols // 2), (rows // 2, cols // 5)]:
        lps = ipp + c * dc * row_dir + r * dr * col_dir
        ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
        ijk = (inv @ ras)[:3]
        idx = np.round(ijk).astype(int)
        max_err = max(max_err, float(np.abs(ijk - idx).max()))
        inside = all(0 <= idx[a] < data.shape[a] for a in range(3))
        if not inside or data[tuple(idx)] != px[r, c]:
            mismatches += 1
        checked += 1
print(json.dumps({"checked": checked, "max_index_error": max_err, "value_mismatches": mismatches}))
