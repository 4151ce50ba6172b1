#!/usr/bin/env bash
# The second stage of issue 27: fit the lesion classifier behind a lesion
# model and score the pipeline with and without it on the small-lesion
# study's held-out sets; prints the rows of docs/model-card.md.
#
#   scripts/second_stage_study.sh MODEL FIT_DATA OUT
#
# MODEL: the lesion model file (with its intracranial stage, if any);
# FIT_DATA: training cases the classifier is fitted on (not the model's
# validation or test cases); OUT: the run folder (OUT/model.dlm is MODEL
# with the classifier). Sets, written once into runs/study/sets with seeds
# used nowhere else:
#   val       10 cases on the training backgrounds (the operating threshold)
#   train-bg  the study's 10 cases on the training backgrounds (seed 777)
#   mni       the study's 10 cases on MNI152 (never trained on)
# Scoring: `delineate segment --threshold 0` (every lesion with its
# confidence), `delineate evaluate` of what it delivers, then
# scripts/study_table.py (recall by size at 0.5/1/2 FP per case, AP,
# median Dice of found lesions by size).
set -euo pipefail
model=$1
data=$2
out=$3
here=$(cd "$(dirname "$0")" && pwd)
sets=runs/study/sets
mkdir -p "$sets" "$out"
[ -d "$sets/val" ] || delineate synth --cases 10 --seed 4242 --background all --kinds met \
    --met-count 3-6 --out "$sets/val"
[ -d "$sets/train-bg" ] || delineate synth --cases 10 --seed 777 --background all --kinds met \
    --met-count 3-6 --out "$sets/train-bg"
[ -d "$sets/mni" ] || delineate synth --cases 10 --seed 9494 --background mni152 --kinds met \
    --met-count 3-6 --out "$sets/mni"
[ -f "$out/fit/candidates.json" ] || delineate candidates "$data" --model "$model" --out "$out/fit"
[ -f "$out/val/candidates.json" ] || delineate candidates "$sets/val" --model "$model" --out "$out/val"
[ -f "$out/model.dlm" ] || delineate model classifier "$model" --fit "$out/fit/candidates.json" \
    --validation "$out/val/candidates.json" --out "$out/model.dlm" | tee "$out/fit.log"
rows=()
for set in train-bg mni; do
    for arm in network classifier; do
        flag=()
        [ "$arm" = network ] && flag=(--no-classifier)
        seg=$out/seg-$set-$arm
        [ -d "$seg" ] || delineate segment "$sets/$set" --out "$seg" --model "$out/model.dlm" \
            --threshold 0 "${flag[@]}" > /dev/null
        rep=$out/report-$set-$arm
        [ -d "$rep" ] || delineate evaluate --pred "$arm=$seg" --truth "$sets/$set" --out "$rep" > /dev/null
        rows+=("$arm, $set=$rep")
    done
done
python3 "$here/study_table.py" "${rows[@]}"
