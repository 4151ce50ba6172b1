#!/usr/bin/env bash
# The long training run of issue 19 (docs/model-card.md, "The long run"):
# the wide U-Net (16-32-64-128, 64³ patches, iwBCE) on data/train-v2, in the
# git-ignored run folder runs/unet-v2, checkpointed every 100 iterations.
#
#   scripts/long_run.sh            start (makes the data if missing)
#   scripts/long_run.sh --resume   continue exactly where the checkpoint is;
#                                  on a fresh clone the committed checkpoint
#                                  models/checkpoints/unet-v2.bin is used
#
# Run it in the background: nohup nice -n 10 scripts/long_run.sh --resume \
#   > runs/unet-v2.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d data/train-v2 ] || delineate synth --cases 180 --seed 20261201 --background all \
    --randomise --out data/train-v2
if [ "${1:-}" = "--resume" ] && [ ! -f runs/unet-v2/checkpoint.bin ]; then
    mkdir -p runs/unet-v2
    cp models/checkpoints/unet-v2.bin runs/unet-v2/checkpoint.bin
fi
exec delineate train --data data/train-v2 --out runs/unet-v2 \
  --loss iwbce --sampling tumor --lesion-p 0.5 --lookalike-p 0.2 \
  --widths 16,32,64,128 --patch 64 --batch 2 --epochs 40 --iterations 500 \
  --lr 1e-3 --lr-drop-epoch 32 --lr-drop-factor 0.1 \
  --folds 9 --fold 0 --val-every 2 --seed 7 --checkpoint-every 100 "$@"
