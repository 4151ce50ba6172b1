#!/usr/bin/env bash
# The small-lesion study (issue 27): one arm = one training configuration at
# a fixed budget, scored on fixed held-out sets; prints its rows of the table
# in docs/model-card.md.
#
#   scripts/small_lesion_study.sh ARM DATA
#
# ARM names the run (runs/study/ARM); DATA is the training set. Everything
# is fixed but what the environment changes, one factor per arm:
#   LOSS (bce), SAMPLING (tumor), LESION_P (0.5), LOOKALIKE_P (0.2),
#   WIDTHS (8,16,32,64), PATCH (48), ITERATIONS (3000), SEED (11)
# Budget: ITERATIONS steps of batch 2, Adam 1e-3 dropped 10x for the last
# sixth, no validation (the last model is scored).
#
# Sets (written once into runs/study/sets, seeds used nowhere else):
#   train-bg  10 cases on the training backgrounds, 1 mm-class grids,
#             metastases 3-6 per case (the issue's seed 777)
#   mni       10 cases on MNI152 (never trained on), metastases 3-6
#   fit       the first 20 cases of DATA itself: does the network fit them?
# Scoring: `delineate segment` as a user runs it, then `delineate evaluate
# --score probability` (the paper's rules; components above 0.5) and
# scripts/study_table.py (recall by size at 0.5/1/2 FP per case, AP,
# median Dice of found lesions by size).
set -euo pipefail
arm=$1
data=$2
here=$(cd "$(dirname "$0")" && pwd)
work=runs/study
sets=$work/sets
mkdir -p "$sets"
[ -d "$sets/train-bg" ] || delineate synth --cases 10 --seed 777 --background all --kinds met \
    --met-count 3-6 --out "$sets/train-bg"
[ -d "$sets/mni" ] || delineate synth --cases 10 --seed 9494 --background mni152 --kinds met \
    --met-count 3-6 --out "$sets/mni"
it=${ITERATIONS:-3000}
run=$work/$arm
if [ ! -f "$run/model.dlm" ]; then
    resume=()
    [ -f "$run/checkpoint.bin" ] && resume=(--resume)
    delineate train --data "$data" --out "$run" \
        --loss "${LOSS:-bce}" --sampling "${SAMPLING:-tumor}" --lesion-p "${LESION_P:-0.5}" \
        --lookalike-p "${LOOKALIKE_P:-0.2}" --widths "${WIDTHS:-8,16,32,64}" --patch "${PATCH:-48}" \
        --batch 2 --epochs 6 --iterations $((it / 6)) --lr 1e-3 --lr-drop-epoch 5 \
        --lr-drop-factor 0.1 --folds 0 --seed "${SEED:-11}" --checkpoint-every 250 "${resume[@]}"
fi
fit=$work/fit-$(basename "$data")
if [ ! -d "$fit" ]; then
    mkdir -p "$fit"
    for c in $(ls "$data" | grep -v '^\.' | grep -v manifest | head -20); do
        ln -s "$(cd "$data/$c" && pwd)" "$fit/$c"
    done
fi
rows=()
for set in train-bg mni fit; do
    src=$sets/$set
    [ "$set" = fit ] && src=$fit
    [ -d "$run/seg-$set" ] || delineate segment "$src" --out "$run/seg-$set" --model "$run/model.dlm" > /dev/null
    [ -d "$run/report-$set" ] || delineate evaluate --pred "$arm=$run/seg-$set" --truth "$src" \
        --out "$run/report-$set" --score probability > /dev/null
    rows+=("$arm, $set=$run/report-$set")
done
python3 "$here/study_table.py" "${rows[@]}"
