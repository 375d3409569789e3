#!/usr/bin/env bash
# The paper's data through the frozen SeamlessM4T-v2-large speech encoder, once, into feature stores:
# LibriSpeech 960 h (Stage 1, ASR attachment), EuroParl-ST and CoVoST 2 (task ST), LibriSQA (task SQA)
# and every evaluation split. Re-running resumes: finished shards are kept.
#
#   LIBRISPEECH_DIR  OpenSLR LibriSpeech, unpacked: train-clean-100/ ... test-other/ (www.openslr.org/12)
#   LIBRISQA_DIR     LibriSQA-PartI-{train,test}.json (hub dataset ZihanZhao/LibriSQA) beside LibriSpeech
#                    audio; default: LIBRISPEECH_DIR
#   EUROPARL_DIR     EuroParl-ST v1.1 release, unpacked (holds en/); its m4a audio converted to flac
#   COVOST_DIR       Common Voice English v4 clips/ and covost_v2.en_XX.tsv for each pair
#   FLEURS_DIR       optional: a `save_to_disk` copy of google/fleurs en_us (default: the hub or its cache)
#   ENCODER_LAYER    optional: a SeamlessM4T conformer layer instead of the length adaptor's output
#   ENCODER_DTYPE    float32 (default), bfloat16 or float16
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/eight_gpus.yaml}  # each process encodes its share
RAW=${RAW:-data/raw}
LIBRISPEECH_DIR=${LIBRISPEECH_DIR:-$RAW/LibriSpeech}
LIBRISQA_DIR=${LIBRISQA_DIR:-$LIBRISPEECH_DIR}
EUROPARL_DIR=${EUROPARL_DIR:-$RAW/europarl-st-v1.1}
COVOST_DIR=${COVOST_DIR:-$RAW/covost2}
ENCODER_DTYPE=${ENCODER_DTYPE:-float32}
encoder=(--encoder "$ENCODER" --dtype "$ENCODER_DTYPE" ${ENCODER_LAYER:+--layer "$ENCODER_LAYER"})

# The paper reports neither the hardware nor the time of feature extraction: features are computed
# once and cached; here on the Stage-1 machine.
paper "feature extraction: time and hardware not reported (features computed once, cached)"

# LibriSpeech 960 h and dev-clean, for Stage 1 and the ASR attachment. --llm adds frames per token
# to the report: whether the mapper's 4x-downsampled output has room for each transcript.
for split in $LS_TRAIN $LS_DEV; do
  step "prepare librispeech $split" smap_launch prepare --dataset "$LIBRISPEECH_DIR/$split" --split "$split" \
    "${encoder[@]}" --llm "$LLM" --out "$DATA/train/librispeech/$split"
done

# Task ST: EuroParl-ST and CoVoST 2, training sets and test sets.
for pair in $EUROPARL_PAIRS; do
  step "prepare europarl-st $pair train" smap_launch prepare --dataset europarl-st --data-dir "$EUROPARL_DIR" \
    --pair "$pair" --split train "${encoder[@]}" --out "$DATA/train/europarl/$pair"
  step "prepare europarl-st $pair test" smap_launch prepare --dataset europarl-st --data-dir "$EUROPARL_DIR" \
    --pair "$pair" --split test "${encoder[@]}" --out "$DATA/europarl/$pair"
done
for pair in $COVOST_PAIRS; do
  step "prepare covost2 $pair train" smap_launch prepare --dataset covost2 --data-dir "$COVOST_DIR" \
    --pair "$pair" --split train "${encoder[@]}" --out "$DATA/train/covost2/$pair"
  step "prepare covost2 $pair test" smap_launch prepare --dataset covost2 --data-dir "$COVOST_DIR" \
    --pair "$pair" --split test "${encoder[@]}" --out "$DATA/covost2/$pair"
done

# Task SQA: LibriSQA part I (free-form answers), training and test sets.
step "prepare librisqa part1 train" smap_launch prepare --dataset librisqa --part 1 --data-dir "$LIBRISQA_DIR" \
  --split train "${encoder[@]}" --out "$DATA/train/librisqa/part1"
step "prepare librisqa part1 test" smap_launch prepare --dataset librisqa --part 1 --data-dir "$LIBRISQA_DIR" \
  --split test "${encoder[@]}" --out "$DATA/librisqa/part1"

# ASR evaluation: LibriSpeech test-clean and test-other, FLEURS English.
for split in $LS_TEST; do
  step "prepare librispeech $split" smap_launch prepare --dataset "$LIBRISPEECH_DIR/$split" --split "$split" \
    "${encoder[@]}" --out "$DATA/librispeech/$split"
done
step "prepare fleurs en" smap_launch prepare --dataset fleurs --lang en_us --split test \
  ${FLEURS_DIR:+--data-dir "$FLEURS_DIR"} "${encoder[@]}" --out "$DATA/fleurs/en"
