#!/usr/bin/env bash
# Stage 2, task-specific ST: attach on the speech-translation instructions of EuroParl-ST (en-es, en-fr,
# en-de, en-it) and CoVoST 2 (en-de, en-zh) together. Needs stage1.sh for the same LLM. Writes
# RUN/attach-task-st. Shared Stage-2 settings: lib.sh.
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/one_gpu_bf16.yaml}
ST_ASR_MIX=${ST_ASR_MIX:-0}  # share of ASR batches mixed in: our notes of the paper mix ASR in for SQA only

train=()
for pair in $EUROPARL_PAIRS; do
  train+=(--train "$DATA/train/europarl/$pair")
done
for pair in $COVOST_PAIRS; do
  train+=(--train "$DATA/train/covost2/$pair")
done

# Paper: about 1.5 h on one A100-80GB.
paper "attach (1K steps): about 1.5 h on one A100-80GB"
step "attach task-st $LLM_TAG" smap_launch attach "${stage2[@]}" --mode task --asr-mix "$ST_ASR_MIX" \
  "${train[@]}" --out "$RUN/attach-task-st"
