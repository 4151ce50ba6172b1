#!/usr/bin/env bash
# Seeds the fuzz corpora with real files: pydicom's test set, dicom3tools'
# example, Colin27 and small NIfTI files of every datatype written by nibabel.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/dicom_read corpus/nifti_read corpus/series_plan
td=$(python3 -c "import os, pydicom.data as d; print(os.path.join(os.path.dirname(d.__file__), 'test_files'))")
cp "$td"/*.dcm corpus/dicom_read/ 2>/dev/null || true
cp /usr/share/doc/dicom3tools/examples/*.dcm corpus/dicom_read/ 2>/dev/null || true
python3 - <<'PY'
import nibabel as nib, numpy as np, os
d = "corpus/nifti_read"
aff = np.array([[-0.9, 0.1, 0, 90], [0.1, 1.1, 0, -120], [0, 0, 2.5, -60], [0, 0, 0, 1]])
for t in ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64"]:
    h = nib.Nifti1Header(); h.set_data_dtype(t)
    img = nib.Nifti1Image(np.arange(60).reshape(5, 4, 3).astype(t), aff, header=h)
    nib.save(img, os.path.join(d, f"{t}.nii"))
    nib.save(img, os.path.join(d, f"{t}.nii.gz"))
PY
printf '\x05\x06%s' "$(head -c 200 /dev/urandom | base64 | head -c 200)" > corpus/series_plan/seed0
mkdir -p corpus/study_design
cat > corpus/study_design/design.toml <<'TOML'
raters = ["A", "B", "C", "D"]
cases = ["case_000", "case_001"]
manual = "{case}/{rater}_manual.nii.gz"
cnn = "{case}/{rater}_cnn.nii.gz"
reference = "{case}/dicom"
times = "times.csv"
TOML
printf 'case,rater,mode,time\ncase_000,A,manual,5:41.7\ncase_000,A,cnn,200\n' > corpus/study_design/times.csv
echo "corpora seeded"

# An RTSTRUCT on the rtstruct_read target's fixed grid (24x20x12, 1x1x2 mm,
# LPS origin (-12, -10, -12), identity directions), written by delineate.
bin="${CARGO_TARGET_DIR:-../target}/release/delineate"
if [ -x "$bin" ]; then
  mkdir -p corpus/rtstruct_read
  work=$(mktemp -d)
  python3 - "$work" <<'PY'
import nibabel as nib, numpy as np, sys, os
d = sys.argv[1]
aff = np.diag([-1.0, -1.0, 2.0, 1.0]); aff[:3, 3] = [12, 10, -12]
img = (np.arange(24 * 20 * 12).reshape(24, 20, 12) % 50).astype(np.int16)
nib.save(nib.Nifti1Image(img, aff), os.path.join(d, "img.nii.gz"))
m = np.zeros((24, 20, 12), np.uint8); m[5:15, 4:12, 3:8] = 1; m[8:11, 6:9, 4:6] = 0; m[9, 7, 5] = 1; m[0, 0, 0] = 2
nib.save(nib.Nifti1Image(m, aff), os.path.join(d, "mask.nii.gz"))
PY
  "$bin" dicom write "$work/img.nii.gz" --out "$work/dcm" >/dev/null
  "$bin" rtstruct write --mask "$work/mask.nii.gz" --reference "$work/dcm" --out corpus/rtstruct_read/grid.dcm >/dev/null
  rm -rf "$work"
fi
cp "$td"/rtstruct.dcm corpus/rtstruct_read/ 2>/dev/null || true
echo "rtstruct corpus seeded"
# The DICOM node: an A-ASSOCIATE-RQ as dcmtk's echoscu sends it (captured
# here), and DIMSE command sets (first byte selects the parser).
mkdir -p corpus/dicom_node
python3 - <<'PY'
import socket, subprocess, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1); port = s.getsockname()[1]
p = subprocess.Popen(["echoscu", "-to", "2", "127.0.0.1", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
c, _ = s.accept(); c.settimeout(2)
data = b""
try:
    while len(data) < 6 or len(data) < 6 + int.from_bytes(data[2:6], "big"):
        chunk = c.recv(65536)
        if not chunk: break
        data += chunk
except socket.timeout:
    pass
c.close(); p.kill()
open("corpus/dicom_node/associate_rq", "wb").write(b"\x01" + data)
# C-ECHO-RQ command set (implicit VR LE), as echoscu sends it.
import struct
def el(g, e, v): return struct.pack("<HHI", g, e, len(v)) + v
body = el(0, 2, b"1.2.840.10008.1.1\x00") + el(0, 0x100, struct.pack("<H", 0x30)) + el(0, 0x110, struct.pack("<H", 1)) + el(0, 0x800, struct.pack("<H", 0x101))
open("corpus/dicom_node/echo_rq", "wb").write(b"\x00" + el(0, 0, struct.pack("<I", len(body))) + body)
PY
