#!/usr/bin/env bash
# Reproduces the numbers of docs/model-card.md for a model file, on held-out
# synthetic test sets drawn on the MNI ICBM152 background (never used in
# training or validation) with seeds used nowhere else:
#
#   A  30 cases, all kinds, randomised acquisitions (contrast, grids
#      0.45-6.5 mm in three planes, artefacts)     --seed 9191 --randomise
#   B  30 cases, all kinds, clinical grids (1 mm, 0.9x0.9x1, 0.5x0.5x2,
#      axial and sagittal), no randomisation        --seed 9292
#   C  20 cases of 3-6 metastases (radiosurgery)    --seed 9393
#
# Each set goes through `delineate segment` exactly as a user runs it (the
# model's contract and operating threshold, what it delivers), then
# `delineate evaluate` with the paper's lesion-wise rules and the classic
# bootstrap, and the BraTS 2023 lesion-wise metrics. Tables by size and kind
# are printed by scripts/model_card_tables.py.
#
#   scripts/model_card.sh MODEL.dlm WORKDIR
#
# Needs `delineate` on the PATH (./setup.sh: it also installs the MNI152
# background) and python3.
set -euo pipefail
model=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
cd "$work"
[ -d test-a ] || delineate synth --cases 30 --seed 9191 --background mni152 --randomise --out test-a
[ -d test-b ] || delineate synth --cases 30 --seed 9292 --background mni152 --out test-b
[ -d test-c ] || delineate synth --cases 20 --seed 9393 --background mni152 --kinds met \
    --met-count 3-6 --out test-c
for set in test-a test-b test-c; do
    rm -rf "seg-$set" "report-$set"
    /usr/bin/time -f "%e s %M KiB" -o "time-$set.txt" \
        delineate segment "$set" --out "seg-$set" --model "$model"
    delineate evaluate --pred model="seg-$set" --truth "$set" --out "report-$set" \
        --metrics brats2023-mets
    python3 "$here/model_card_tables.py" "report-$set" "$set"
done
