#!/usr/bin/env bash
# The GPU checks, in one go: what a lent GPU machine must show, in about 10 minutes.
#
#   bash benchmarks/device_check.sh OUT [TOKENIZER]
#
# From the repository root, on a machine with a CUDA GPU and torch, transformers and accelerate
# installed (no network needed). TOKENIZER: the synthetic LLMs' tokenizer, an LLM spec or a
# saved tokenizer folder (default: the embedded SmolLM2's). Writes under OUT:
#   gpu.txt                    the card, driver and library versions
#   cli_import.txt             why smap's CLI does not import, when it does not (then nothing else runs)
#   pytest.log                 the test suite on CUDA: Accelerate picks the GPU, so pretrain,
#                              attach (bf16 included), generation and evaluation run there
#   stage_cost_paper_bf16_workers{2,0}.txt
#                              Stage-1 and attach steps at the paper's sizes (paper mapper,
#                              1B and 8B LLMs with random weights), bf16, with 2 loader workers
#                              and without, peak GPU memory
#   stage_cost_small_*.txt     the CPU quickstart's sizes on the GPU, bf16 against fp32
# Each part has its own time limit, so one that fails or hangs leaves the others' results.
set -uo pipefail
out=${1:?usage: bash benchmarks/device_check.sh OUT [TOKENIZER]}
tokenizer=${2:-smollm2-135m}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, '| transformers',
transformers.__version__, '| accelerate', accelerate.__version__, '|', torch.cuda.get_device_name())" \
    | tee -a "$out/gpu.txt" || exit 1
# The CLI's imports (typer 0.29 needs pydantic, which the machine's image lacks): a package left behind
# would otherwise fail every CLI test a minute in and leave the lease spent.
python3 -m smap.cli --help > /dev/null 2> "$out/cli_import.txt" \
    || { echo "device_check: smap's CLI does not import here: $(tail -1 "$out/cli_import.txt")" >&2; exit 1; }

# The test suite first: of all the parts, the one a short lease must not lose.
echo "== the test suite on CUDA"
# test_quickstart needs the embedded wheels; test_paper_recipes launches CPU-configured recipes.
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 8 --timeout 150 tests \
    --ignore tests/test_quickstart.py --ignore tests/test_paper_recipes.py > "$out/pytest.log" 2>&1 || status=1
tail -25 "$out/pytest.log"

# 512 utterances: 25 batches, so the 14 steps timed stay in one epoch, as in a long run.
for workers in 2 0; do
    echo "== stage cost at the paper's sizes, bf16, $workers loader workers"
    timeout 300 python3 benchmarks/stage_cost.py --preset paper --feature-dim 1024 --llm-sizes 1b,8b \
        --utterances 512 --mixed-precision bf16 --max-frames 16000 --workers $workers --warmup 4 --steps 10 \
        --tokenizer "$tokenizer" > "$out/stage_cost_paper_bf16_workers$workers.txt" || status=1
    tail -5 "$out/stage_cost_paper_bf16_workers$workers.txt"
done

for mp in bf16 no; do
    echo "== stage cost at the quickstart's sizes, mixed precision $mp"
    timeout 90 python3 benchmarks/stage_cost.py --feature-dim 384 --llm-sizes 360m --pool 2 \
        --mixed-precision "$mp" --max-frames 2000 --warmup 4 --steps 10 --tokenizer "$tokenizer" \
        > "$out/stage_cost_small_$mp.txt" || status=1
    tail -4 "$out/stage_cost_small_$mp.txt"
done
exit $status
