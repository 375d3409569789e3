"""smap.data.corpus: training speech from several synthesiser families, held-out splits as before, test-flite.

Plans, and the audio of an augmented utterance (tests/test_synth.py speaks each family).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json

import pytest
import torch

from smap.data.corpus import SPLITS, CorpusConfig, plan
from smap.data.sources import open_source
from smap.synth import FLITE_VOICES, PICO_VOICES

# sha256 of json.dumps([[id, voice, text, rate, pitch, answer], ...]) of each split of
# plan(CorpusConfig()) at the commit before synthesiser families (599554e), seed 0.
BEFORE_FAMILIES = {
    "train": (3000, "fc33c7c41221023cf567435ff5687bbbf7ea04d748e50044e61cd218fb7e59e7"),
    "dev": (200, "5f8d95001498fcde227c3dded3abe8270b35a13976852a469ee4e3f25d069636"),
    "test": (300, "9e3855f52094fdb83472978479ba8b16a57baaa12606ea18456ba198d3ad0098"),
    "everyday": (189, "1b15040ee1b6254a3ffeb069c4b3963b80cbff2c368212faec218492ddaa8e28"),
    "train-qa": (1424, "0d380cb1e754a0d0b44abbc09239bc37c14a12a1e29d66c8a84877c8cf6ea43d"),
    "test-qa": (58, "6a5afdc65e596b3765af21fa41e3a00619ab05cf2ce207766089bb7bc9c8cc18"),
}
FIRST_BEFORE = {  # the first utterance of each held-out split then, to show what moved if the digest does
    "test": ["tts-test-00000", "en-us+steph", "The scandal served to increase his popularity", 162, 61, None],
    "everyday": ["tts-everyday-00000", "en-us+Henrique", "The shop on the corner closes early on Sundays.", 165, 47, None],
    "test-qa": ["tts-test-qa-00000", "en-us+steph", "What is three times eight?", 144, 61, "24"],
}
HELD_OUT = ("test", "everyday", "test-qa")
TRAINING = ("train", "dev", "train-qa")


def _rows(utterances) -> list[list]:
    return [[u.id, u.voice, u.text, u.rate, u.pitch, u.answer] for u in utterances]


def _digest(utterances) -> tuple[int, str]:
    return len(utterances), hashlib.sha256(json.dumps(_rows(utterances)).encode()).hexdigest()


def _family(voice: str) -> str:
    return voice.split(":")[0] if ":" in voice else "espeak"


@pytest.fixture(scope="module")
def default_plan():
    return plan(CorpusConfig())


def test_held_out_splits_are_the_utterances_of_before(default_plan):
    for split in HELD_OUT:
        assert _rows(default_plan[split][:1]) == [FIRST_BEFORE[split]]
        assert _digest(default_plan[split]) == BEFORE_FAMILIES[split], split


def test_espeak_alone_gives_the_corpus_of_before():
    alone = plan(CorpusConfig(synthesizers=(("espeak", 1.0),)))
    assert {s: _digest(alone[s]) for s in BEFORE_FAMILIES} == BEFORE_FAMILIES


def test_training_voices_come_from_each_family_by_its_share(default_plan):
    shares = dict(CorpusConfig().synthesizers)
    assert set(shares) == {"espeak", "pico"}
    for split in ("train", "dev"):
        families = collections.Counter(_family(u.voice) for u in default_plan[split])
        assert set(families) == {"espeak", "pico"}
        assert families["pico"] / len(default_plan[split]) == pytest.approx(shares["pico"], abs=0.05), split
    pico = [u for u in default_plan["train"] if _family(u.voice) == "pico"]
    assert {u.voice for u in pico} == {f"pico:{v}" for v in PICO_VOICES}
    # Two voices only: the drawn tempo and pitch vary them across the whole range.
    assert len({u.rate for u in pico}) > 50 and len({u.pitch for u in pico}) > 25
    # Shares are weights: scaling them changes nothing.
    assert plan(CorpusConfig(synthesizers=(("espeak", 7), ("pico", 3))))["train"] == default_plan["train"]
    more_pico = plan(CorpusConfig(synthesizers=(("espeak", 0.2), ("pico", 0.8))))["train"]
    assert sum(_family(u.voice) == "pico" for u in more_pico) > 0.75 * len(more_pico)


def test_a_sentence_spoken_several_times_gets_distinct_voices(default_plan):
    voices = collections.defaultdict(list)
    for u in default_plan["train-qa"]:
        voices[u.text].append(u.voice)
    assert {len(set(v)) for v in voices.values()} == {CorpusConfig().voices_per_question}
    assert any(_family(v) == "pico" for vs in voices.values() for v in vs)
    with pytest.raises(ValueError, match="voices_per_sentence=19 exceeds the 18 training voices"):
        CorpusConfig(voices_per_sentence=19)
    assert CorpusConfig(voices_per_sentence=18)


def test_no_family_is_heard_both_in_training_and_in_a_test_it_is_held_out_for(default_plan):
    trained = {u.voice for split in TRAINING for u in default_plan[split]}
    assert {_family(v) for v in trained} == {"espeak", "pico"}
    for split in HELD_OUT:
        voices = {u.voice for u in default_plan[split]}
        assert {_family(v) for v in voices} == {"espeak"} and not voices & trained
    assert set(SPLITS) == set(default_plan)


def test_test_flite_is_the_test_sentences_in_flite_voices(default_plan):
    flite, test = default_plan["test-flite"], default_plan["test"]
    assert [u.text for u in flite] == [u.text for u in test]
    assert [u.id for u in flite] == [f"tts-test-flite-{i:05d}" for i in range(len(test))]
    assert {u.voice for u in flite} == {f"flite:{v}" for v in FLITE_VOICES}
    assert {u.pitch for u in flite} == {50} and {u.split for u in flite} == {"test-flite"}
    low, high = CorpusConfig().rate
    assert all(low <= u.rate <= high for u in flite) and len({u.rate for u in flite}) > 30
    # Its own random stream: asking for it moves nothing else, and it does not depend on the training mix.
    alone = plan(CorpusConfig(synthesizers=(("espeak", 1.0),)))
    assert alone["test-flite"] == flite


def test_the_tts_source_lists_test_flite_and_records_the_mix_where_it_speaks():
    config = CorpusConfig(train=10, dev=4, test=6)
    source = open_source("tts", "test-flite", tts=config)
    assert [it.record["speaker"].split(":")[0] for it in source.items] == ["flite"] * 6
    # The training families shape train, dev and train-qa only: a test store prepared before they existed stays valid.
    assert "synthesizers" not in source.info["corpus"] and "augment" not in source.info["corpus"]
    train = open_source("tts", "train", tts=config)
    assert json.loads(json.dumps(train.info["corpus"]))["synthesizers"] == [["espeak", 0.7], ["pico", 0.3]]


@pytest.mark.parametrize("mix, message", [
    ((("espeak", 0.5), ("flite", 0.5)), "flite is held out for test-flite"),
    ((("espeak", 0.5), ("espeak", 0.5)), "at most once"),
    ((("festival", 1.0),), "name each of espeak, pico"),
    ((), "name each of"),
    ((("espeak", 1.0), ("pico", 0.0)), "every share must be positive"),
])
def test_a_bad_mix_is_refused(mix, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CorpusConfig(), synthesizers=mix)


def test_augmentation_is_opt_in_per_training_utterance_and_moves_no_draw(default_plan):
    assert not any(u.effects for utts in default_plan.values() for u in utts)
    small = CorpusConfig(train=400)
    base, aug = plan(small), plan(dataclasses.replace(small, augment=("speed", "noise", "band")))
    for split in SPLITS:
        if split in ("train", "train-qa"):
            assert [dataclasses.replace(u, effects=()) for u in aug[split]] == base[split]
        else:
            assert aug[split] == base[split]
    effects = [dict(u.effects) for u in aug["train"]]
    for kind in ("speed", "noise", "band"):
        share = sum(kind in e for e in effects) / len(effects)
        assert 0.4 < share < 0.6, kind
    assert {e["band"] for e in effects if "band" in e} == {8000, 11025}
    assert all(0.9 <= e["speed"] <= 1.1 and round(e["speed"], 2) == e["speed"] for e in effects if "speed" in e)
    augmented = next(u for u in aug["train"] if len(u.effects) == 3)
    assert torch.equal(augmented.synthesize(), augmented.synthesize())
    assert augmented.synthesize().numel() != dataclasses.replace(augmented, effects=()).synthesize().numel()
    with pytest.raises(ValueError, match="augment .*reverb.*: name each of speed, noise, band"):
        CorpusConfig(augment=("reverb",))
