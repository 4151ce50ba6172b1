#!/usr/bin/env bash
# Trains the intracranial-mask stage of the built-in model (issue 32) and
# puts it into the lesion model. The exact commands of docs/model-card.md.
#
#   scripts/train_intracranial.sh [--resume]
#
# Writes data/mask-train-v2 (80 randomised cases on the three training
# backgrounds, 30 % of them skull-stripped as research datasets are; MNI152
# is never drawn) and runs/mask-v2; then
#   delineate model attach models/unet-synth.dlm --intracranial runs/mask-v2/model.dlm --out …
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d data/mask-train-v2 ] || delineate synth --cases 80 --seed 20261207 --background all \
    --randomise --skull-strip-p 0.3 --out data/mask-train-v2
delineate train --target intracranial --data data/mask-train-v2 --out runs/mask-v2 \
    --spacing 2 --patch 64 --widths 8,16,32,64 --loss dice --sampling uniform \
    --batch 2 --epochs 8 --iterations 250 --lr 1e-3 --lr-drop-epoch 6 --lr-drop-factor 0.1 \
    --folds 0 --seed 3 --checkpoint-every 250 "$@"
