#!/usr/bin/env bash
# The paper's evaluation of this LLM's four attached models, with its baselines: the gold transcript
# given to the same LLM (topline) and a cascade (ASR, then the LLM on its transcript). Suites: EuroParl-ST
# and CoVoST 2 (COMET, BLEU, chrF, target-language adherence), LibriSQA part I (judged accuracy),
# LibriSpeech test-clean/test-other and FLEURS (WER). Needs prepare.sh and the four attach recipes.
# Writes RUN/eval/<model>/results.{md,json,png} and outputs/. One process: evaluate does not shard.
#
#   COMET_MODEL  wmt22-comet-da (default, needs unbabel-comet), a local checkpoint, or none
#   JUDGES       judge LLMs for LibriSQA, averaged (the paper averaged four; ours: the two paper LLMs)
#   CASCADE_ASR  the cascade's ASR. The paper's cascade used the SFM's own ASR (SeamlessM4T); smap's
#                cascade takes a smap model folder or a CTranslate2 Whisper: default, the asr-ce model.
#   EVAL_MAX_NEW_TOKENS  longest output (default 256: long EuroParl-ST segments outgrow smap's 128)
#   EVAL_LIMIT   optional: only the first N utterances of each split (a quick check)
source "$(dirname "$0")/lib.sh"

COMET_MODEL=${COMET_MODEL:-Unbabel/wmt22-comet-da}
JUDGES=${JUDGES:-meta-llama/Llama-3.1-8B-Instruct utter-project/EuroLLM-9B-Instruct}
CASCADE_ASR=${CASCADE_ASR:-$RUN/attach-asr-ce}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-256}

st=()
for pair in $EUROPARL_PAIRS; do st+=("europarl/$pair"); done
for pair in $COVOST_PAIRS; do st+=("covost2/$pair"); done
asr=()
for split in $LS_TEST; do asr+=("librispeech/$split"); done
asr+=(fleurs/en)
sqa=(librisqa/part1)
ST=$(IFS=,; echo "${st[*]}")
ASR=$(IFS=,; echo "${asr[*]}")
SQA=$(IFS=,; echo "${sqa[*]}")

scoring=(--data-root "$DATA" --comet-model "$COMET_MODEL" --max-new-tokens "$EVAL_MAX_NEW_TOKENS"
         ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"})
judges=()  # loaded up front beside the model: given only where LibriSQA is evaluated
for judge in $JUDGES; do
  judges+=(--judge "$judge")
done

# The paper does not report evaluation time or hardware.
paper "evaluation: time and hardware not reported"
step "evaluate asr-ce, transcript, cascade" smap_run evaluate --suite "$ST,$SQA,$ASR" \
  --system smap,transcript,cascade --model "$RUN/attach-asr-ce" --asr "$CASCADE_ASR" "${scoring[@]}" "${judges[@]}" \
  --out "$RUN/eval/asr-ce"
step "evaluate asr-ce-mse" smap_run evaluate --suite "$ST,$SQA,$ASR" --model "$RUN/attach-asr-ce-mse" \
  "${scoring[@]}" "${judges[@]}" --out "$RUN/eval/asr-ce-mse"
step "evaluate task-st" smap_run evaluate --suite "$ST" --model "$RUN/attach-task-st" "${scoring[@]}" \
  --out "$RUN/eval/task-st"
step "evaluate task-sqa" smap_run evaluate --suite "$SQA" --model "$RUN/attach-task-sqa" "${scoring[@]}" \
  "${judges[@]}" --out "$RUN/eval/task-sqa"
