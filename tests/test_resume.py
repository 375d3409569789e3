"""`--resume` continues a Stage-1 run exactly: a run interrupted after a checkpoint and resumed ends
with the very mapper (bit for bit) that the same run left uninterrupted ends with. A SIGKILL of
`smap pretrain` is test_pretrain's, of `smap attach` (the same loop, `smap.training.fit`)
test_reliability's."""

from __future__ import annotations

import pytest
import torch

from conftest import write_store
from smap.mapper import SpeechMapper
from smap.pretrain import PretrainConfig, pretrain
from smap.training import Checkpointer

STEPS, CRASH_AT = 14, 5


class Crash(Exception):
    """The process dies right after a checkpoint is written."""


def _pretrain(out, train, llm, **options) -> dict[str, torch.Tensor]:
    # Dropout on, so that an RNG not restored shows; six batches an epoch, so that the resumed run
    # starts mid-epoch and crosses epoch boundaries.
    pretrain(PretrainConfig(out=str(out), train=[str(train)], llm=str(llm), preset="tiny", dropout=0.1, steps=STEPS,
                            warmup=2, max_frames=300, log_every=1, eval_every=1000, save_every=CRASH_AT, **options))
    return SpeechMapper.from_pretrained(out / "mapper").state_dict()


@pytest.mark.parametrize("options", [{}, {"grad_accum": 2}, {"workers": 1}], ids=["plain", "grad-accum", "worker"])
def test_a_run_crashed_after_a_checkpoint_and_resumed_equals_an_uninterrupted_one(
        tmp_path, sentences, tiny_llama, monkeypatch, options):
    train = write_store(tmp_path / "train", sentences[:24])
    straight = _pretrain(tmp_path / "straight", train, tiny_llama, **options)

    save = Checkpointer.save

    def save_then_crash(self, step, state):
        saved = save(self, step, state)
        if step == CRASH_AT:
            raise Crash
        return saved

    monkeypatch.setattr(Checkpointer, "save", save_then_crash)
    with pytest.raises(Crash):
        _pretrain(tmp_path / "run", train, tiny_llama, **options)
    monkeypatch.setattr(Checkpointer, "save", save)
    resumed = _pretrain(tmp_path / "run", train, tiny_llama, resume=True, **options)
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []
