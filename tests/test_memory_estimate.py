"""benchmarks/memory.py: its formulas against what torch holds for tiny models, and its table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from smap.mapper import SpeechMapper, preset
from conftest import REPO, child_env

SCRIPT = REPO / "benchmarks" / "memory.py"
_spec = importlib.util.spec_from_file_location("memory_benchmark", SCRIPT)
memory = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up
_spec.loader.exec_module(memory)


def tiny_llama(tied: bool = False):
    """A frozen bf16 Llama with grouped keys/values (4 heads, 2 key/value heads) and its shape."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = memory.LLMShape(layers=2, hidden=64, intermediate=160, heads=4, kv_heads=2, vocab=300, tied=tied)
    config = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, tie_word_embeddings=tied)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(torch.bfloat16).eval().requires_grad_(False), shape


def saved_bytes(module: torch.nn.Module, run) -> int:
    """Bytes of the tensors autograd saves for backward while `run()` runs, each storage once, the
    module's parameters left out (they are counted as weights)."""
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(saved.values())


@pytest.mark.parametrize("tied", [False, True])
def test_llm_weights_are_what_a_built_llama_holds(tied):
    model, shape = tiny_llama(tied)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory.weight_bytes(memory.llm_params(shape), 2) == held


def test_adamw_state_is_two_fp32_moments_of_the_mapper():
    cfg = preset("tiny", 16, 64)
    mapper = SpeechMapper(cfg)
    assert memory.mapper_params(cfg) == sum(p.numel() for p in mapper.parameters())
    optimizer = torch.optim.AdamW(mapper.parameters())
    out = mapper(torch.randn(2, 40, 16), torch.tensor([40, 31]))
    out.embeddings.square().mean().backward()
    optimizer.step()
    moments = sum(v.numel() * v.element_size() for state in optimizer.state.values()
                  for k, v in state.items() if k in ("exp_avg", "exp_avg_sq"))
    assert memory.adamw_bytes(memory.mapper_params(cfg)) == moments


@pytest.mark.parametrize("pool", [1, 2])
def test_mapper_activations_are_what_autograd_saves(pool):
    cfg = preset("tiny", 16, 64, pool=pool)  # dropout 0: masks aside, as on a GPU
    mapper = SpeechMapper(cfg).train()
    features, lengths = torch.randn(3, 48, 16), torch.tensor([48, 35, 20])
    kept = saved_bytes(mapper, lambda: mapper(features, lengths))
    estimate, frames = memory.mapper_activation_bytes(cfg, 3, 48, 4)
    assert estimate == kept
    assert frames == int(mapper(features, lengths).lengths.max())


@pytest.mark.parametrize("prefix", [0, 7])
def test_llm_activations_are_what_backward_through_the_frozen_llm_keeps(prefix):
    """Input embeddings that need grad through a frozen bf16 Llama, with no cache (causal attention,
    keys and values at their own heads) or with a cached prompt prefix (a mask; keys and values
    repeated to every head), as `PromptedLM.response_loss` runs it."""
    from transformers import DynamicCache

    model, shape = tiny_llama()
    batch, seq = 3, 50
    cache = None
    if prefix:
        with torch.no_grad():
            out = model(input_ids=torch.arange(prefix)[None], use_cache=True)
        cache = DynamicCache([(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                              for layer in out.cache.layers], config=model.config)
    inputs = torch.randn(batch, seq, shape.hidden, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(prefix, prefix + seq)[None]
    kept = saved_bytes(model, lambda: model.model(inputs_embeds=inputs, cache=cache, position_ids=positions,
                                                  use_cache=False))
    assert memory.llm_activation_bytes(shape, batch, seq, prefix, 2) == kept


def test_kv_cache_is_what_a_forward_caches():
    model, shape = tiny_llama()
    with torch.no_grad():
        out = model(input_ids=torch.zeros(5, 37, dtype=torch.long), use_cache=True)
    held = sum(t.numel() * t.element_size() for layer in out.cache.layers for t in (layer.keys, layer.values))
    assert memory.kv_cache_bytes(shape, 5, 37, 2) == held


def test_the_table_prints_for_the_paper_defaults():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=child_env(), timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    for stage in ("Stage 1", "attach", "evaluate: speech model", "all at once (before)", "one at a time (now)"):
        assert any(stage in row for row in rows), (stage, run.stdout)
    assert all(row.rstrip(" |").endswith(" GB") or "several GPUs" in row for row in rows), run.stdout


def test_judges_one_at_a_time_fit_where_all_at_once_did_not(capsys):
    memory.main(["--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    before = [r for r in rows if "all at once" in r["stage"]]
    now = [r for r in rows if "one at a time" in r["stage"]]
    assert before and len(before) == len(now)
    for b, n in zip(before, now):
        assert n["peak"] == max(n["parts"].values())
        assert "several GPUs" in b["smallest_gpu"] and n["smallest_gpu"].endswith(" GB")


def test_a_bad_option_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as stop:
        memory.main(["--batch-size", "0"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code != 0 and "\n" not in err and "--batch-size" in err
