#!/usr/bin/env bash
# Reproduces the numbers of docs/model-card.md for a model file:
# held-out synthetic validation and test cases, the operating threshold
# (chosen on validation: the lowest threshold with <= 1 false positive per
# case), and the test results at that threshold by lesion size.
#
#   scripts/model_card.sh MODEL.dlm WORKDIR
#
# Needs `delineate` on the PATH (./setup.sh) and python3.
set -euo pipefail
model=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
cd "$work"
[ -d val ] || delineate synth --cases 8 --seed 303 --out val
[ -d test ] || delineate synth --cases 12 --seed 202 --out test
[ -d test-met ] || delineate synth --cases 10 --seed 404 --kinds met --met-count 3-6 --out test-met
# Validation at a low threshold, so that every candidate component exists.
rm -rf seg-val report-val
delineate segment val --out seg-val --model "$model" --threshold 0
delineate evaluate --pred model=seg-val --truth val --out report-val \
    --component-threshold 0.1 --thresholds unique
t=$(python3 "$here/operating_point.py" report-val --max-fp 1 | tail -1 |
    python3 -c "import json,sys; print(json.load(sys.stdin)['model'])")
echo "operating threshold (validation, <= 1 FP/case): $t"
for set in test test-met; do
    rm -rf "seg-$set" "report-$set"
    delineate segment "$set" --out "seg-$set" --model "$model" --threshold 0
    delineate evaluate --pred model="seg-$set" --truth "$set" --out "report-$set" \
        --component-threshold "$t" --thresholds unique
    python3 "$here/operating_point.py" "report-$set" --threshold "$t"
done
