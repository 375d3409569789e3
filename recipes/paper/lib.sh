# Sourced by every paper recipe (not run on its own): strict mode, the settings the recipes share,
# and `step`, which runs one named step and stops the recipe at the first failure, naming the step.
# Every setting is an environment variable whose default is the paper's value; where our notes of the
# paper give none, smap's default or our choice, said so beside it.
# shellcheck disable=SC2034  # (file-wide) the settings are read by the recipes that source this file
set -euo pipefail

PAPER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Models. The paper pretrained and attached one mapper per LLM: run the recipes once with each LLM.
LLM=${LLM:-utter-project/EuroLLM-9B-Instruct}      # or meta-llama/Llama-3.1-8B-Instruct
ENCODER=${ENCODER:-facebook/seamless-m4t-v2-large}  # frozen speech encoder (1024-d)
LLM_TAG=${LLM_TAG:-$(basename "$LLM" | tr '[:upper:]' '[:lower:]')}

# Where things go: feature stores under DATA (evaluation splits as DATA/<suite>/<split>, which is
# what `smap evaluate --data-root DATA` reads; training sets under DATA/train), runs under RUN.
DATA=${DATA:-data/paper}
RUNS=${RUNS:-runs/paper}
RUN=$RUNS/$LLM_TAG

# The paper's data: LibriSpeech 960 h, EuroParl-ST and CoVoST 2 pairs (space-separated lists).
LS_TRAIN=${LS_TRAIN:-train-clean-100 train-clean-360 train-other-500}
LS_DEV=${LS_DEV:-dev-clean}
LS_TEST=${LS_TEST:-test-clean test-other}
EUROPARL_PAIRS=${EUROPARL_PAIRS:-en-es en-fr en-de en-it}
COVOST_PAIRS=${COVOST_PAIRS:-en-de en-zh}

# Training precision, passed to smap (it overrides the Accelerate config's): auto is bf16 on a GPU
# that has it and fp16 on one that has not (V100s, the paper's Stage-1 cards); or bf16, fp16, no.
PRECISION=${PRECISION:-auto}

# Stage 2, shared by the four attach recipes: this LLM's Stage-1 mapper, ~1K steps with the LLM frozen
# (the paper), held-out CE on dev-clean. The rate, warm-up and batch budget are smap's defaults: the
# paper's are not in our notes. Re-running resumes from the last checkpoint.
ATTACH_STEPS=${ATTACH_STEPS:-1000}
ATTACH_LR=${ATTACH_LR:-1e-4}
ATTACH_WARMUP=${ATTACH_WARMUP:-50}
ATTACH_MAX_FRAMES=${ATTACH_MAX_FRAMES:-4000}
# The user turn: the paper's plain prompt, the instruction then the speech in the placeholder's place
# ('instruction-first'). smap's default, 'quoted' (an ASR request's speech in double quotes), is its
# own addition; a model attached with it is labelled "+quoted" in the evaluation's table.
LAYOUT=${LAYOUT:-instruction-first}
stage2=(--mapper "$RUN/stage1" --llm "$LLM" --valid "$DATA/train/librispeech/$LS_DEV" --steps "$ATTACH_STEPS"
        --lr "$ATTACH_LR" --warmup "$ATTACH_WARMUP" --max-frames "$ATTACH_MAX_FRAMES" --mixed-precision "$PRECISION"
        --layout "$LAYOUT" --resume)

# smap_launch ARGS...: `smap ARGS` under Accelerate, for every step (prepare, pretrain, attach,
# evaluate). ACCEL_CONFIG: one of accelerate/*.yaml (each recipe picks its default);
# ACCEL_ARGS: more launcher flags (several nodes: "--machine_rank 1 --main_process_ip HOST").
# LAUNCH, if set, replaces the whole launcher, e.g. LAUNCH="python -m smap.cli" (the tests).
smap_launch() {
  local -a cmd extra
  if [[ -n ${LAUNCH:-} ]]; then
    read -r -a cmd <<< "$LAUNCH"
  else
    read -r -a extra <<< "${ACCEL_ARGS:-}"
    cmd=(accelerate launch --config_file "$ACCEL_CONFIG" "${extra[@]}" -m smap.cli)
  fi
  echo "    \$ ${cmd[*]} $*"
  "${cmd[@]}" "$@"
}

# paper TEXT: say what the paper reports for the next step (hardware, time).
paper() {
  echo "    paper: $*"
}

# step NAME CMD...: run CMD; on failure, stop the recipe with NAME and CMD's exit code.
step() {
  local name=$1
  shift
  echo "==> [$name] $(date '+%F %T')"
  local start=$SECONDS
  if "$@"; then
    echo "==> [$name] done in $((SECONDS - start)) s"
  else
    local rc=$?
    echo "recipe $(basename "$0") stopped: step '$name' failed (exit $rc)" >&2
    exit "$rc"
  fi
}
