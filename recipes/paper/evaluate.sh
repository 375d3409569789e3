#!/usr/bin/env bash
# The paper's evaluation of this LLM's four attached models, with its baselines: the gold transcript
# given to the same LLM (topline), the cascade (the SFM's own ASR, then the LLM on its transcript) and
# the SFM's own speech translation (sfm-st). Suites: EuroParl-ST and CoVoST 2 (COMET, BLEU, chrF,
# target-language adherence), LibriSQA part I (judged accuracy), LibriSpeech test-clean/test-other and
# FLEURS (WER). Needs prepare.sh and the four attach recipes.
# Writes RUN/eval/<model>/results.{md,json,png} and outputs/. Under Accelerate like training: one GPU by
# default; ACCEL_CONFIG=$PAPER_DIR/accelerate/eight_gpus.yaml shares each split's utterances across eight
# processes (one LLM copy per GPU), gathered in order, the same table as one process's.
#
#   COMET_MODEL  wmt22-comet-da (default, needs unbabel-comet), a local checkpoint, or none
#   JUDGES       judge LLMs for LibriSQA, a comma list, averaged (the paper averaged four judges, none
#                of them the model under test; which four is not in our notes). Default, our choice:
#                the other paper LLM, Qwen2.5-7B-Instruct, Mistral-7B-Instruct-v0.3 and Gemma-2-9B-it.
#                smap refuses a judge that is the LLM under test.
#   CASCADE_ASR  the cascade's ASR, also the SFM of sfm-st: default the paper's SFM ($ENCODER,
#                SeamlessM4T-v2, decoding its own encoder's features: the stores'). A smap model
#                folder or a CTranslate2 Whisper also serve the cascade (SYSTEMS without sfm-st then).
#   SYSTEMS      the first model's rows (default smap,transcript,cascade,sfm-st)
#   SMAP_DECODING  0 (default): the paper's decoding, no ASR output cap and no first-line cut of ASR
#                outputs (--no-asr-cap --no-first-line); 1: smap's (the rows then say "asr cap 1,
#                first-line cut"). The prompt's layout is the attached models' own (lib.sh LAYOUT).
#   EVAL_MAX_NEW_TOKENS  longest output (default 256: long EuroParl-ST segments outgrow smap's 128)
#   EVAL_LIMIT   optional: only the first N utterances of each split (a quick check)
source "$(dirname "$0")/lib.sh"

ACCEL_CONFIG=${ACCEL_CONFIG:-$PAPER_DIR/accelerate/one_gpu_bf16.yaml}

COMET_MODEL=${COMET_MODEL:-Unbabel/wmt22-comet-da}
if [[ $LLM == meta-llama/Llama-3.1-8B-Instruct ]]; then other=utter-project/EuroLLM-9B-Instruct
else other=meta-llama/Llama-3.1-8B-Instruct; fi
JUDGES=${JUDGES:-$other,Qwen/Qwen2.5-7B-Instruct,mistralai/Mistral-7B-Instruct-v0.3,google/gemma-2-9b-it}
CASCADE_ASR=${CASCADE_ASR:-$ENCODER}
SYSTEMS=${SYSTEMS:-smap,transcript,cascade,sfm-st}
SMAP_DECODING=${SMAP_DECODING:-0}
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
[[ $SMAP_DECODING == 1 ]] || scoring+=(--no-asr-cap --no-first-line)
# The SFM decodes its own final encoder output, stored by prepare.sh under $DATA/sfm.
asr_data=(); [[ $CASCADE_ASR == "$ENCODER" ]] && asr_data=(--asr-data-root "$DATA/sfm")
judges=()  # loaded after generation, one at a time, the systems' models freed first: given only where LibriSQA is evaluated
IFS=, read -r -a judge_list <<< "$JUDGES"
for judge in "${judge_list[@]}"; do
  judges+=(--judge "$judge")
done

# The paper does not report evaluation time or hardware.
paper "evaluation: time and hardware not reported"
step "evaluate asr-ce with $SYSTEMS" smap_launch evaluate --suite "$ST,$SQA,$ASR" \
  --systems "$SYSTEMS" --model "$RUN/attach-asr-ce" --asr "$CASCADE_ASR" "${asr_data[@]}" "${scoring[@]}" "${judges[@]}" \
  --out "$RUN/eval/asr-ce"
step "evaluate asr-ce-mse" smap_launch evaluate --suite "$ST,$SQA,$ASR" --model "$RUN/attach-asr-ce-mse" \
  "${scoring[@]}" "${judges[@]}" --out "$RUN/eval/asr-ce-mse"
step "evaluate task-st" smap_launch evaluate --suite "$ST" --model "$RUN/attach-task-st" "${scoring[@]}" \
  --out "$RUN/eval/task-st"
step "evaluate task-sqa" smap_launch evaluate --suite "$SQA" --model "$RUN/attach-task-sqa" "${scoring[@]}" \
  "${judges[@]}" --out "$RUN/eval/task-sqa"
