#!/usr/bin/env bash
# Stage 1: pretrain the SpeechMapper on LibriSpeech 960 h towards one LLM's input embeddings, without
# the LLM (only its embedding matrix is loaded). The paper ran it once per LLM:
#   recipes/paper/stage1.sh                                        # EuroLLM-9B-Instruct
#   LLM=meta-llama/Llama-3.1-8B-Instruct recipes/paper/stage1.sh   # Llama-3.1-8B-Instruct
# Needs prepare.sh. Writes RUN/stage1 (the mapper in mapper/, logs, checkpoints). Re-running resumes.
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/eight_gpus.yaml}
PRESET=${PRESET:-paper}                          # two blocks of 6 layers, 1024 -> 2048 -> 4096, ~277M
ALPHA=${ALPHA:-5}                                # content positions weigh 5x the pad positions in the MSE
STAGE1_WARMUP=${STAGE1_WARMUP:-100000}           # AdamW, linear warm-up then cosine decay: 100K (the paper)
STAGE1_STEPS=${STAGE1_STEPS:-300000}             # our choice: the paper gives the warm-up and ~4 days, not the total
STAGE1_LR=${STAGE1_LR:-1e-3}                     # smap's default peak rate (not in our notes of the paper)
STAGE1_MAX_FRAMES=${STAGE1_MAX_FRAMES:-12000}    # encoder frames per batch and GPU (smap's default)
STAGE1_SAVE_EVERY=${STAGE1_SAVE_EVERY:-2000}
STAGE1_EVAL_EVERY=${STAGE1_EVAL_EVERY:-5000}

train=()
for split in $LS_TRAIN; do
  train+=(--train "$DATA/train/librispeech/$split")
done

# Paper: about 4 days on 8 x V100-32GB.
paper "Stage 1: about 4 days on 8 x V100-32GB"
step "stage1 $LLM_TAG" smap_launch pretrain "${train[@]}" --valid "$DATA/train/librispeech/$LS_DEV" \
  --llm "$LLM" --preset "$PRESET" --alpha "$ALPHA" --steps "$STAGE1_STEPS" --warmup "$STAGE1_WARMUP" \
  --lr "$STAGE1_LR" --max-frames "$STAGE1_MAX_FRAMES" --mixed-precision "$PRECISION" \
  --save-every "$STAGE1_SAVE_EVERY" --eval-every "$STAGE1_EVAL_EVERY" --resume --out "$RUN/stage1"
