import json

import pytest
import torch

from conftest import save_tiny_causal_lm
from smap.llm import LLMSpecError, load_causal_lm, load_embeddings, pad_id_of, pad_rule, resolve


def test_embedding_only_from_a_sharded_checkpoint(tmp_path):
    folder = save_tiny_causal_lm(tmp_path / "llm", layers=4, hidden=64, max_shard_size="100KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2  # really sharded
    emb = load_embeddings(str(folder))
    full, tok = load_causal_lm(str(folder))
    assert torch.equal(emb.weight, full.get_input_embeddings().weight.float())
    assert emb.pad_id == tok.pad_token_id and emb.pad_rule == "pad_token" and emb.dim == 64


def test_embedding_only_from_a_single_file_qwen2(tiny_qwen2):
    emb = load_embeddings(str(tiny_qwen2))
    full, _ = load_causal_lm(str(tiny_qwen2))
    assert torch.equal(emb.weight, full.get_input_embeddings().weight.float())


@pytest.mark.embedded
def test_embedded_gguf_embedding_equals_the_full_model():
    emb = load_embeddings("smollm2-135m")
    full, tok = load_causal_lm("smollm2-135m")
    assert emb.weight.shape == (49152, 576)
    assert torch.equal(emb.weight, full.get_input_embeddings().weight.float())
    assert emb.pad_id == tok.pad_token_id
    assert all(not p.requires_grad for p in full.parameters()) and not full.training


def test_pad_rule_falls_back_to_eos():
    class Tok:
        pad_token_id, eos_token_id = None, 7

    assert pad_id_of(Tok()) == 7
    assert pad_rule(Tok()) == (7, "eos_token: the tokenizer has no pad token")
    Tok.pad_token_id = Tok.unk_token_id = 0  # a pad set to unk, as some checkpoints do
    assert pad_rule(Tok()) == (0, "pad_token (also its unk token)")
    Tok.pad_token_id = Tok.eos_token_id = None
    with pytest.raises(LLMSpecError, match="neither a pad nor an EOS"):
        pad_id_of(Tok())


@pytest.mark.parametrize("spec,message", [
    ("missing.gguf", "no such GGUF file"),
    ("./nowhere", "not an LLM spec"),
    ("a/b/c", "not an LLM spec"),
    ("hf:./a/b", "not a hub id"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(LLMSpecError, match=message):
        resolve(spec)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(LLMSpecError, match="no config.json"):
        resolve(str(tmp_path))


def test_atomic_writes_leave_the_old_version_or_the_new_one(tmp_path):
    """`smap.fileio`, which the LLM cache, stores, mappers and reports write through."""
    from smap.fileio import atomic_write, atomic_write_dir, atomic_write_text

    path = tmp_path / "report.json"
    atomic_write_text(path, "old")

    def fails(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]

    cached = tmp_path / "cache" / "tokenizer"
    with pytest.raises(OSError, match="disk full"):
        atomic_write_dir(cached, lambda tmp: (tmp.mkdir(), fails(tmp / "vocab.json")))
    assert not cached.exists() and list((tmp_path / "cache").iterdir()) == []
    atomic_write_dir(cached, lambda tmp: (tmp.mkdir(), (tmp / "vocab.json").write_text("first")))
    # A second writer of the same cache finds it there: the first one's folder is kept, whole.
    atomic_write_dir(cached, lambda tmp: (tmp.mkdir(), (tmp / "vocab.json").write_text("second")))
    assert (cached / "vocab.json").read_text() == "first" and [p.name for p in (tmp_path / "cache").iterdir()] == ["tokenizer"]
