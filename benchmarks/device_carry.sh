#!/usr/bin/env bash
# What a lent GPU machine needs beside its own image, gathered here, where pip reaches PyPI: the wheels
# of smap's dependencies at the versions .venv holds, built for the machine's CPython 3.12 on x86-64,
# and the embedded LLM's tokenizer as a folder (the model wheel is too large to carry).
#
#   bash benchmarks/device_carry.sh        # -> .whl/ (~50 MB) and .tok/ (3.4 MB), both git-ignored
#
# Then, on the machine, with both carried (benchmarks/README.md, "On a GPU"):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   bash benchmarks/device_check.sh "$OUT" .tok
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[[ -x $py ]] || { echo "device_carry: no .venv here: run bash recipes/setup.sh first" >&2; exit 1; }

# Missing from the machine's image (2026-12) or older there than smap needs. typer 0.29 imports
# pydantic, which the image lacks: carrying typer without it fails every CLI test.
names=(transformers huggingface_hub hf-xet httpx2 httpcore2 truststore kernels tomlkit tokenizers
       datasets dill multiprocess gguf jiwer rapidfuzz soundfile cffi pycparser py3langid espeakng-loader
       typer annotated-doc pydantic pydantic_core annotated-types typing-inspection typing_extensions)
# One pip call for all: NAME==VERSION for each one installed.
mapfile -t pins < <("$py" -m pip show "${names[@]}" 2>/dev/null \
  | awk '/^Name:/ { name = $2 } /^Version:/ { print name "==" $2 }')
if (( ${#pins[@]} != ${#names[@]} )); then
  echo "device_carry: ${#pins[@]} of the ${#names[@]} packages are installed in .venv (run bash recipes/setup.sh)" >&2
  exit 1
fi

rm -rf .whl.tmp && mkdir .whl.tmp
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl.tmp "${pins[@]}"
rm -rf .whl && mv .whl.tmp .whl

rm -rf .tok
"$py" -c "from smap.llm import load_tokenizer, resolve; load_tokenizer(resolve('smollm2-135m')).save_pretrained('.tok')"
du -sh .whl .tok
