#!/usr/bin/env bash
# The paper's data through the frozen SeamlessM4T-v2-large speech encoder, once, into feature stores:
# LibriSpeech 960 h (Stage 1, ASR attachment), EuroParl-ST and CoVoST 2 (task ST), LibriSQA (task SQA)
# and every evaluation split. Re-running resumes: finished shards are kept.
#
#   LIBRISPEECH_DIR  OpenSLR LibriSpeech, unpacked: train-clean-100/ ... test-other/ (www.openslr.org/12)
#   LIBRISQA_DIR     LibriSQA-PartI-{train,test}.json (hub dataset ZihanZhao/LibriSQA) beside LibriSpeech
#                    audio; default: LIBRISPEECH_DIR
#   EUROPARL_DIR     EuroParl-ST v1.1 release, unpacked (holds en/); its m4a audio converted to flac
#                    once (README.md "Getting the data")
#   COVOST_DIR       Common Voice English v4 (cv-corpus-4-2019-12-10/en: clips/ and validated.tsv, which
#                    holds the transcripts) and covost_v2.en_XX.tsv for each pair
#   FLEURS_DIR       optional: google/fleurs en_us test, from its parquet export (`hf download google/fleurs
#                    --repo-type dataset --revision refs/convert/parquet --include 'en_us/test/*' --local-dir
#                    DIR`) or a `save_to_disk` copy (default: the parquet export from the hub, or its cache)
#   ENCODER_LAYER    the SeamlessM4T layer the mapper reads: 24 (default, the last conformer layer, 50
#                    frames/s) or `adaptor` (the length adaptor's output, ~6 frames/s)
#   ENCODER_DTYPE    float32 (default), bfloat16 or float16
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/eight_gpus.yaml}  # each process encodes its share
RAW=${RAW:-data/raw}
LIBRISPEECH_DIR=${LIBRISPEECH_DIR:-$RAW/LibriSpeech}
LIBRISQA_DIR=${LIBRISQA_DIR:-$LIBRISPEECH_DIR}
EUROPARL_DIR=${EUROPARL_DIR:-$RAW/europarl-st-v1.1}
COVOST_DIR=${COVOST_DIR:-$RAW/covost2}
ENCODER_DTYPE=${ENCODER_DTYPE:-float32}
# The adaptor's ~6.25 frames/s against ~3.5 transcript tokens/s of read speech is ~1.8 frames per
# token: after the mapper's 4x downsampling nearly every Stage-1 target would be cut, and pretrain
# refuses such a run. The last conformer layer (50 frames/s) gives ~14 (benchmarks/frames_per_token.py
# measures it on prepared stores).
ENCODER_LAYER=${ENCODER_LAYER:-24}
encoder=(--encoder "$ENCODER" --dtype "$ENCODER_DTYPE" --layer "$ENCODER_LAYER")

# The cascade's ASR and the SFM's own ST (evaluate.sh) decode the SFM's final encoder output with its
# text decoder: each test split is stored that way too, under $DATA/sfm.
sfm_copy() {  # sfm_copy NAME SUITE/SPLIT PREPARE-ARGS...
  local name=$1 key=$2; shift 2
  step "prepare $name (SFM output, for the cascade)" smap_launch prepare "$@" --encoder "$ENCODER" \
    --dtype "$ENCODER_DTYPE" --out "$DATA/sfm/$key"
}

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
  sfm_copy "europarl-st $pair test" "europarl/$pair" --dataset europarl-st --data-dir "$EUROPARL_DIR" \
    --pair "$pair" --split test
done
for pair in $COVOST_PAIRS; do
  step "prepare covost2 $pair train" smap_launch prepare --dataset covost2 --data-dir "$COVOST_DIR" \
    --pair "$pair" --split train "${encoder[@]}" --out "$DATA/train/covost2/$pair"
  step "prepare covost2 $pair test" smap_launch prepare --dataset covost2 --data-dir "$COVOST_DIR" \
    --pair "$pair" --split test "${encoder[@]}" --out "$DATA/covost2/$pair"
  sfm_copy "covost2 $pair test" "covost2/$pair" --dataset covost2 --data-dir "$COVOST_DIR" --pair "$pair" --split test
done

# Task SQA: LibriSQA part I (free-form answers), training and test sets.
step "prepare librisqa part1 train" smap_launch prepare --dataset librisqa --part 1 --data-dir "$LIBRISQA_DIR" \
  --split train "${encoder[@]}" --out "$DATA/train/librisqa/part1"
step "prepare librisqa part1 test" smap_launch prepare --dataset librisqa --part 1 --data-dir "$LIBRISQA_DIR" \
  --split test "${encoder[@]}" --out "$DATA/librisqa/part1"
sfm_copy "librisqa part1 test" "librisqa/part1" --dataset librisqa --part 1 --data-dir "$LIBRISQA_DIR" --split test

# ASR evaluation: LibriSpeech test-clean and test-other, FLEURS English.
for split in $LS_TEST; do
  step "prepare librispeech $split" smap_launch prepare --dataset "$LIBRISPEECH_DIR/$split" --split "$split" \
    "${encoder[@]}" --out "$DATA/librispeech/$split"
  sfm_copy "librispeech $split" "librispeech/$split" --dataset "$LIBRISPEECH_DIR/$split" --split "$split"
done
step "prepare fleurs en" smap_launch prepare --dataset fleurs --lang en_us --split test \
  ${FLEURS_DIR:+--data-dir "$FLEURS_DIR"} "${encoder[@]}" --out "$DATA/fleurs/en"
sfm_copy "fleurs en" "fleurs/en" --dataset fleurs --lang en_us --split test ${FLEURS_DIR:+--data-dir "$FLEURS_DIR"}
