#!/usr/bin/env bash
# Stage 2, task-agnostic: attach this LLM's Stage-1 mapper with ASR instructions only, loss CE on the
# transcript (LibriSpeech 960 h). Needs stage1.sh for the same LLM. Writes RUN/attach-asr-ce, a model
# folder for `smap infer --model` and `smap evaluate --model`. Shared Stage-2 settings: lib.sh.
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/one_gpu_bf16.yaml}

train=()
for split in $LS_TRAIN; do
  train+=(--train "$DATA/train/librispeech/$split")
done

# Paper: about 1.5 h on one A100-80GB.
paper "attach (1K steps): about 1.5 h on one A100-80GB"
step "attach asr-ce $LLM_TAG" smap_launch attach "${stage2[@]}" --mode asr "${train[@]}" --out "$RUN/attach-asr-ce"
