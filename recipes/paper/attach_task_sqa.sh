#!/usr/bin/env bash
# Stage 2, task-specific SQA: attach on LibriSQA part I (questions about a spoken passage, free-form
# answers), with LibriSpeech ASR batches mixed in with probability 0.5 (the paper). Needs stage1.sh for
# the same LLM. Writes RUN/attach-task-sqa. Shared Stage-2 settings: lib.sh.
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/one_gpu_bf16.yaml}
SQA_ASR_MIX=${SQA_ASR_MIX:-0.5}

asr=()
for split in $LS_TRAIN; do
  asr+=(--asr-train "$DATA/train/librispeech/$split")
done

# Paper: about 1.5 h on one A100-80GB.
paper "attach (1K steps): about 1.5 h on one A100-80GB"
step "attach task-sqa $LLM_TAG" smap_launch attach "${stage2[@]}" --mode task --asr-mix "$SQA_ASR_MIX" \
  --train "$DATA/train/librisqa/part1" "${asr[@]}" --out "$RUN/attach-task-sqa"
