"""smap.data.sources and smap.data.corpus: every source lists the same record schema, lazily."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from smap.audio import AudioError, synthesize
from smap.data.corpus import SPLITS, CorpusConfig, describe, plan, read_lines
from smap.data.sources import SourceError, open_source
from smap.text import normalize

SMALL = CorpusConfig(train=400, dev=40, test=60)


def _write(path, seconds=0.5, freq=220.0, sr=16000, **kw):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, **kw)
    return path


# --- the synthetic corpus ------------------------------------------------------------------------

def test_tts_plan_is_seeded_and_splits_are_disjoint():
    a, b, other = plan(SMALL), plan(SMALL), plan(CorpusConfig(seed=1, train=400, dev=40, test=60))
    assert a == b
    assert [u.text for u in a["train"]] != [u.text for u in other["train"]]
    sentences = {split: {normalize(u.text) for u in utts} for split, utts in a.items()}
    assert set(a) == set(SPLITS)
    for i, x in enumerate(SPLITS):
        for y in SPLITS[i + 1:]:
            if {x, y} != {"test", "test-flite"}:  # test-flite: the test sentences in an unseen family
                assert not sentences[x] & sentences[y], (x, y)
    assert len(sentences["train"]) == 400 and len(sentences["test"]) == 60 and len(sentences["dev"]) == 40
    assert len(sentences["everyday"]) == len(read_lines("everyday_sentences.txt"))
    # Held-out voices: no test variant is heard in training.
    variant = lambda u: u.voice.split("+")[1]  # noqa: E731
    train_variants = {variant(u) for split in ("train", "dev", "train-qa") for u in a[split] if "+" in u.voice}
    for split in ("test", "everyday", "test-qa"):
        assert not {variant(u) for u in a[split]} & train_variants
    # The test sentences do not move when only the training size changes.
    bigger = plan(CorpusConfig(train=800, dev=40, test=60))
    assert [u.text for u in bigger["test"]] == [u.text for u in a["test"]]


def test_tts_has_thousands_of_training_sentences_and_spoken_questions():
    full = plan(CorpusConfig(train=8000))
    assert len({u.text for u in full["train"]}) == 8000
    qa = full["train-qa"] + full["test-qa"]
    assert len(qa) > 200 and all(u.answer and u.text.endswith("?") for u in qa)
    # Training questions are heard in several voices each, held-out ones once.
    voices = collections.defaultdict(set)
    for u in full["train-qa"]:
        voices[u.text].add(u.voice)
    assert {len(v) for v in voices.values()} == {CorpusConfig().voices_per_question}
    assert len(full["test-qa"]) == len({u.text for u in full["test-qa"]})
    rec = full["test-qa"][0].record()
    assert rec["answer"] == full["test-qa"][0].answer and "question" not in rec
    stats = describe(full)
    assert stats["test"]["train_word_coverage"] > 0.9  # vocab=5000: test words the training text covers
    # Past the ~9.8k sentences of the 5,000 commonest words, training text goes on with rarer ones:
    # the held-out splits do not move and the smaller corpus is a prefix of the larger.
    larger = plan(CorpusConfig(train=20000))
    assert larger["train"][:8000] == full["train"] and all(larger[s] == full[s] for s in SPLITS if s != "train")
    assert len({normalize(u.text) for u in larger["train"]}) == 20000
    assert not {normalize(u.text) for u in larger["train"]} & {normalize(u.text) for s in SPLITS if s != "train"
                                                             for u in larger[s]}
    assert describe(larger)["test-qa"]["train_word_coverage"] > stats["test-qa"]["train_word_coverage"]
    with pytest.raises(ValueError, match="40000 training sentences asked but the WordNet text holds"):
        plan(CorpusConfig(train=40000))
    with pytest.raises(ValueError, match="only .* have all their words in the top 50"):
        plan(CorpusConfig(vocab=50))


def test_tts_question_vocabulary_sentences_cover_the_questions_and_only_add_to_train():
    from smap.data.corpus import _common_words, held_out_only_words, read_qa

    extra = read_lines("qa_vocabulary_sentences.txt")
    questions = {normalize(r["question"]) for r in read_qa()}
    base, full = plan(CorpusConfig()), plan(dataclasses.replace(CorpusConfig(), qa_vocab_voices=1))
    taught = {normalize(u.text) for u in full["train"][len(base["train"]):]}
    assert taught and taught <= {normalize(t) for t in extra}
    taught_words = {w for t in taught for w in t.split()}
    # The sentences teach every word of the training questions that the WordNet text lacks...
    heard = {w for _, n in _common_words(CorpusConfig().vocab) for w in n.split()}
    train_q = [{"question": u.text, "answer": u.answer} for u in full["train-qa"]]
    test_q = [{"question": u.text, "answer": u.answer} for u in full["test-qa"]]
    unheard = {w for r in train_q for w in normalize(r["question"]).split()} - heard
    assert unheard and unheard <= taught_words
    # ... and none of the words that only the held-out questions and answers use.
    only_test = held_out_only_words([u.text for u in base["train"]], train_q, test_q)
    assert only_test and not only_test & taught_words
    # Speakable as written (no digits), utterance length, and none is a question of the task.
    assert all(re.fullmatch(r"[A-Z][A-Za-z ,']*[a-z]", t) and 4 <= len(t.split()) <= 16 for t in extra)
    assert not {normalize(t) for t in extra} & questions
    more_cfg = dataclasses.replace(SMALL, qa_vocab_voices=3)
    base, more = plan(SMALL), plan(more_cfg)
    n = len(base["train"])
    assert more["train"][:n] == base["train"]  # a store prepared without them is a prefix
    kept = list(dict.fromkeys(u.text for u in more["train"][n:]))  # in the file's order, each in 3 voices
    assert kept == [t for t in extra if t in kept] and [u.text for u in more["train"][n:]] == [t for t in kept for _ in range(3)]
    assert all(len({u.voice for u in more["train"][i:i + 3]}) == 3 for i in range(n, len(more["train"]), 3))
    assert [u.id for u in more["train"]] == [f"tts-train-{i:05d}" for i in range(len(more["train"]))]
    assert all(more[s] == base[s] for s in SPLITS if s != "train")
    assert describe(more)["test-qa"]["train_word_coverage"] > describe(base)["test-qa"]["train_word_coverage"]
    # A store records the setting only when it is used, so that stores prepared before it existed are still valid.
    assert "qa_vocab_voices" not in open_source("tts", "dev", tts=SMALL).info["corpus"]
    assert open_source("tts", "train", tts=more_cfg).info["corpus"]["qa_vocab_voices"] == 3
    with pytest.raises(ValueError, match="qa_vocab_voices=19 exceeds the 18 training voices"):
        CorpusConfig(qa_vocab_voices=19)


def test_tts_audio_checksums_do_not_depend_on_order():
    utts = plan(SMALL)["test"][:4]

    def digests(order):
        return {utts[i].id: hashlib.sha256(utts[i].synthesize().numpy().tobytes()).hexdigest() for i in order}

    assert digests([0, 1, 2, 3]) == digests([3, 1, 0, 2])
    source = open_source("tts", "test", tts=SMALL)
    first = source.items[0]
    assert first.record == {"id": "tts-test-00000", "text": utts[0].text, "speaker": utts[0].voice,
                            "split": "test", "src_lang": "en"}
    assert torch.equal(first.load(16000), utts[0].synthesize())
    assert source.info["splits"]["test"]["utterances"] == 60
    with pytest.raises(SourceError, match="no split 'nope'"):
        open_source("tts", "nope")


# --- manifests and folders ---------------------------------------------------------------------

def test_jsonl_manifest_rows_and_problems(tmp_path):
    _write(tmp_path / "a.wav")
    (tmp_path / "clips").mkdir()
    _write(tmp_path / "clips" / "b.flac", seconds=1.0)
    lines = [
        json.dumps({"audio": "a.wav", "text": "hello there", "speaker": "s1"}),
        json.dumps({"id": "b", "audio": "clips/b.flac", "text": "general kenobi", "translation": "hola", "tgt_lang": "es"}),
        "{broken",
        json.dumps({"audio": "", "text": "no audio"}),
        json.dumps({"id": "b", "audio": "a.wav", "text": "same id again"}),
        "",
        json.dumps({"audio": "a.wav", "id": "seg", "text": "part", "start": 0.1, "end": 0.3}),
        json.dumps({"audio": "a.wav", "text": "a span", "start": 0.25, "end": 0.5}),
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    src = open_source(str(manifest))
    by_id = {it.id: it for it in src.items if not it.error}
    assert by_id["a"].record == {"id": "a", "text": "hello there", "speaker": "s1"}
    assert by_id["b"].record["translation"] == "hola" and by_id["b"].load(16000).numel() == 16000
    assert by_id["seg"].load(16000).numel() == 3200
    assert by_id["a_0.25_0.5"].load(16000).numel() == 4000  # a segment without an id is named by its span
    errors = {it.id: it.error for it in src.items if it.error}
    assert errors == {"m.jsonl:3": "line 3: malformed JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
                      "m.jsonl:4": "line 4: empty 'audio'", "b": "line 5: duplicate id 'b'"}


def test_tsv_and_csv_manifests_with_audio_dir_and_fields(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    _write(clips / "x.wav")
    (tmp_path / "cv.tsv").write_text("path\tsentence\tsplit\nx.wav\tHi there.\ttest\nx.wav\tOther.\ttrain\n")
    src = open_source(str(tmp_path / "cv.tsv"), "test", audio_dir=clips)
    assert [it.record for it in src.items] == [{"id": "x", "text": "Hi there.", "split": "test"}]
    assert src.items[0].load(16000).numel() == 8000
    (tmp_path / "m.csv").write_text("wavfile,words\nclips/x.wav,one two\n")
    src = open_source(str(tmp_path / "m.csv"), audio_field="wavfile", text_field="words")
    assert src.items[0].record["text"] == "one two"
    with pytest.raises(SourceError, match=r"m.csv: no audio path column .* --audio-field"):
        open_source(str(tmp_path / "m.csv"))
    with pytest.raises(SourceError, match="no column 'nope' \\(--text-field\\)"):
        open_source(str(tmp_path / "m.csv"), audio_field="wavfile", text_field="nope")
    with pytest.raises(SourceError, match="has no 'split' column"):
        open_source(str(tmp_path / "m.csv"), "test", audio_field="wavfile", text_field="words")


def test_librispeech_layout_folder(tmp_path):
    chapter = tmp_path / "test-clean" / "1089" / "134686"
    chapter.mkdir(parents=True)
    _write(chapter / "1089-134686-0000.flac")
    _write(chapter / "1089-134686-0001.flac", seconds=0.25)
    (chapter / "1089-134686.trans.txt").write_text("1089-134686-0000 HE HOPED THERE WOULD BE STEW\n1089-134686-0001 STUFF IT\n")
    src = open_source(str(tmp_path / "test-clean"))
    assert [it.id for it in src.items] == ["1089-134686-0000", "1089-134686-0001"]
    assert src.items[0].record == {"id": "1089-134686-0000", "text": "HE HOPED THERE WOULD BE STEW",
                                   "speaker": "1089", "src_lang": "en", "split": "test-clean"}
    assert src.items[1].load(16000).numel() == 4000
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no \\*.trans.txt files"):
        open_source(str(tmp_path / "empty"))


# --- Hugging Face datasets and official releases ---------------------------------------------------

def _flac_bytes(tmp_path, seconds) -> bytes:
    return _write(tmp_path / f"tmp{seconds}.flac", seconds=seconds).read_bytes()


def test_hub_librispeech_and_fleurs_from_a_local_copy(tmp_path):
    import datasets

    rows = {"file": ["a.flac", "b.flac"], "audio": [{"bytes": _flac_bytes(tmp_path, 0.5), "path": "a.flac"},
                                                    {"bytes": _flac_bytes(tmp_path, 1.0), "path": "b.flac"}],
            "text": ["HELLO WORLD", "GOOD BYE"], "speaker_id": [1, 2], "chapter_id": [3, 3], "id": ["1-3-0", "2-3-1"]}
    ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=16000))
    ds.save_to_disk(str(tmp_path / "ls"))
    src = open_source("librispeech", "test-clean", data_dir=tmp_path / "ls")
    assert [it.record for it in src.items] == [
        {"id": "1-3-0", "text": "HELLO WORLD", "src_lang": "en", "split": "test-clean", "speaker": "1"},
        {"id": "2-3-1", "text": "GOOD BYE", "src_lang": "en", "split": "test-clean", "speaker": "2"}]
    assert src.items[1].load(16000).numel() == 16000  # decoded by soundfile, not torchcodec
    fleurs = datasets.Dataset.from_dict({"id": [7, 7], "audio": rows["audio"], "raw_transcription": ["Hi.", "Hi."],
                                         "transcription": ["hi", "hi"]})
    fleurs.save_to_disk(str(tmp_path / "fl"))
    src = open_source("fleurs", "test", data_dir=tmp_path / "fl")
    assert [it.id for it in src.items] == ["7-0", "7-1"]  # one sentence, two speakers
    assert src.items[0].record["src_lang"] == "en"
    with pytest.raises(SourceError, match="no split 'test.clean'"):
        open_source("librispeech", "test.clean", data_dir=tmp_path / "ls")


def test_fleurs_from_a_local_copy_of_its_parquet_export(tmp_path):
    import datasets

    # hf download google/fleurs --revision refs/convert/parquet --include 'en_us/test/*' --local-dir DIR
    audio = [{"bytes": _flac_bytes(tmp_path, 0.5), "path": "1.wav"}, {"bytes": _flac_bytes(tmp_path, 0.25), "path": "2.wav"}]
    for split, n in (("test", 2), ("validation", 1)):
        (tmp_path / "DIR" / "en_us" / split).mkdir(parents=True)
        ds = datasets.Dataset.from_dict({"id": [1710, 1711][:n], "num_samples": [8000, 4000][:n], "path": ["1.wav", "2.wav"][:n],
                                         "audio": audio[:n], "transcription": ["hi there", "bye"][:n],
                                         "raw_transcription": ["Hi there.", "Bye."][:n], "gender": [0, 1][:n]})
        ds.cast_column("audio", datasets.Audio(sampling_rate=16000)).to_parquet(str(tmp_path / "DIR" / "en_us" / split / "0000.parquet"))
    src = open_source("fleurs", "test", data_dir=tmp_path / "DIR")
    assert [it.record for it in src.items] == [
        {"id": "1710-0", "text": "Hi there.", "src_lang": "en", "split": "test"},
        {"id": "1711-1", "text": "Bye.", "src_lang": "en", "split": "test"}]
    assert src.items[1].load(16000).numel() == 4000
    dev = open_source("fleurs", "dev", data_dir=tmp_path / "DIR")  # FLEURS calls its dev split validation
    assert dev.split == "validation" and [it.record["text"] for it in dev.items] == ["Hi there."]
    with pytest.raises(SourceError, match=r"fleurs: could not load split 'train' from .*DIR .*hf download google/fleurs "
                                          r"--repo-type dataset --revision refs/convert/parquet --include 'en_us/train/\*'"):
        open_source("fleurs", "train", data_dir=tmp_path / "DIR")
    with pytest.raises(SourceError, match="fleurs: no split 'eval'; choose train, validation"):
        open_source("fleurs", "eval", data_dir=tmp_path / "DIR")


@pytest.mark.parametrize("name, split, lang, want", [
    # One split's files, never a whole configuration (LibriSpeech's clean is 30 GB).
    ("librispeech", "test-clean", None, (("openslr/librispeech_asr",),
                                         {"data_files": {"test": ["clean/test/*.parquet"]}, "split": "test"})),
    ("librispeech", "dev-other", None, (("openslr/librispeech_asr",),
                                        {"data_files": {"validation": ["other/validation/*.parquet"]}, "split": "validation"})),
    # FLEURS is a loading script: its parquet export, which datasets 4 and later can read.
    ("fleurs", "test", "en_us", (("google/fleurs",), {"data_files": {"test": ["en_us/test/*.parquet"]}, "split": "test",
                                                     "revision": "refs/convert/parquet"})),
    ("fleurs", "dev", "fr_fr", (("google/fleurs",), {"data_files": {"validation": ["fr_fr/validation/*.parquet"]},
                                                    "split": "validation", "revision": "refs/convert/parquet"})),
])
def test_hub_loading_asks_for_one_splits_parquet_files(monkeypatch, name, split, lang, want):
    import datasets

    asked = []

    def load_dataset(*args, **kwargs):
        asked.append((args, kwargs))
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(SourceError, match=r"could not load split .*ConnectionError: offline.*hf download"):
        open_source(name, split, lang=lang)
    assert asked == [want]


def _clip(clips, name, seconds=0.5):
    return _write(clips / name, seconds=seconds)


def test_covost2_joins_the_release_with_common_voice_validated_tsv(tmp_path):
    # The release TSV beside Common Voice English v4 as it unpacks: cv-corpus-4-2019-12-10/en/{clips/, validated.tsv}.
    cv = tmp_path / "raw" / "cv-corpus-4-2019-12-10" / "en"
    (cv / "clips").mkdir(parents=True)
    for i, seconds in ((1, 1.0), (2, 0.5), (3, 0.5), (4, 0.5)):
        _clip(cv / "clips", f"common_voice_en_{i}.wav", seconds)
    (cv / "validated.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\n"
        "c1\tcommon_voice_en_1.wav\tHe said \"yes\".\t2\t0\t\t\t\n"
        "c2\tcommon_voice_en_2.wav\tA train row.\t2\t0\t\t\t\n"
        "c3\tcommon_voice_en_3.wav\tAn added one.\t2\t0\t\t\t\n"
        "c4\tcommon_voice_en_4.wav\t\t2\t0\t\t\t\n")
    (tmp_path / "raw" / "covost_v2.en_de.tsv").write_text(
        "path\ttranslation\tsplit\n"
        "common_voice_en_1.wav\tEr sagte \"ja\".\ttest\n"
        "common_voice_en_2.wav\tEine Zeile.\ttrain\n"
        "common_voice_en_3.wav\tEine weitere.\ttrain_covost\n"
        "common_voice_en_4.wav\tOhne Text.\ttest\n"
        "common_voice_en_9.wav\tNicht in Common Voice.\ttest\n")
    src = open_source("covost2", "test", data_dir=tmp_path / "raw", pair="en-de")
    assert src.items[0].record == {"id": "common_voice_en_1", "text": 'He said "yes".', "translation": 'Er sagte "ja".',
                                   "src_lang": "en", "tgt_lang": "de", "speaker": "c1", "split": "test"}
    assert src.items[0].load(16000).numel() == 16000
    # An empty or missing transcript is an error naming the file, not an empty transcript; the rest goes through.
    validated = cv / "validated.tsv"
    assert [it.error for it in src.items] == [None, f"common_voice_en_4.wav: no transcript in {validated}",
                                              f"common_voice_en_9.wav: no transcript in {validated}"]
    train = open_source("covost2", "train", data_dir=tmp_path / "raw", pair="en-de")
    assert [it.record["text"] for it in train.items] == ["A train row.", "An added one."]  # train_covost is train
    validated.write_text("client_id\tpath\tsentence\n")
    with pytest.raises(SourceError, match="none of the 3 test clips of covost_v2.en_de.tsv has a transcript in .*validated.tsv"):
        open_source("covost2", "test", data_dir=tmp_path / "raw", pair="en-de")
    validated.unlink()
    with pytest.raises(SourceError, match=r"no Common Voice validated.tsv \(transcripts and speakers of covost_v2.en_de.tsv\)"):
        open_source("covost2", "test", data_dir=tmp_path / "raw", pair="en-de")


def test_covost2_reads_the_split_files_get_covost_splits_writes(tmp_path):
    (tmp_path / "en" / "clips").mkdir(parents=True)
    _clip(tmp_path / "en" / "clips", "common_voice_en_7.wav")
    (tmp_path / "covost_v2.en_zh-CN.test.tsv").write_text(
        "path\tsentence\ttranslation\tclient_id\n"
        "common_voice_en_7.wav\tShe sells \"sea\" shells.\t她卖贝壳。\tc7\n"
        "common_voice_en_8.wav\t\t空的。\tc8\n")
    src = open_source("covost2", "test", data_dir=tmp_path, pair="en-zh")
    assert src.items[0].record == {"id": "common_voice_en_7", "text": 'She sells "sea" shells.', "translation": "她卖贝壳。",
                                   "src_lang": "en", "tgt_lang": "zh", "speaker": "c7", "split": "test"}
    assert src.items[1].error == f"{tmp_path / 'covost_v2.en_zh-CN.test.tsv'}:3: empty sentence"


def test_covost2_refuses_what_covost_2_does_not_have(tmp_path):
    with pytest.raises(SourceError, match=r"--pair en-it: CoVoST 2 translates English into de, ca, zh, .* only"):
        open_source("covost2", "test", data_dir=tmp_path, pair="en-it")
    with pytest.raises(SourceError, match=r"covost2: no covost_v2.en_zh-CN.tsv \(nor covost_v2.en_zh-CN.test.tsv\) .*commonvoice.mozilla.org"):
        open_source("covost2", "test", data_dir=tmp_path, pair="en-zh")
    with pytest.raises(SourceError, match="needs, under --data-dir: Common Voice English version 4"):
        open_source("covost2", "test")
    with pytest.raises(SourceError, match="--pair fr-en: expected en-XX"):
        open_source("covost2", "test", pair="fr-en")


def _europarl_release(root, segments, en, fr):
    folder = root / "en" / "fr" / "test"
    folder.mkdir(parents=True)
    (root / "en" / "audios").mkdir(parents=True)
    (folder / "segments.lst").write_text(segments)
    (folder / "segments.en").write_text(en)
    (folder / "segments.fr").write_text(fr)
    return folder


def test_europarl_st_segments_and_m4a(tmp_path):
    root = tmp_path / "v1.1"
    _europarl_release(root, "talk1 0.50 1.25\ntalk1 2.00 3.00\n", "First part.\nSecond part.\n",
                      "Première partie.\nDeuxième partie.\n")
    _write(root / "en" / "audios" / "talk1.flac", seconds=3.0)
    src = open_source("europarl-st", "test", data_dir=root, pair="en-fr")
    assert src.items[1].record == {"id": "talk1_2.00_3.00", "text": "Second part.", "translation": "Deuxième partie.",
                                   "src_lang": "en", "tgt_lang": "fr", "split": "test"}
    assert src.items[0].load(16000).numel() == 12000
    (root / "en" / "audios" / "talk1.flac").rename(root / "en" / "audios" / "talk1.m4a")
    with pytest.raises(SourceError, match=r"1 talks in .* are m4a only .*convert them once: cd .* && for f in \*.m4a; "
                                          r"do ffmpeg -loglevel error -i \"\$f\" -ac 1 -ar 16000 \"\$\{f%.m4a\}.flac\"; done"):
        open_source("europarl-st", "test", data_dir=root, pair="en-fr")
    with pytest.raises(SourceError, match="segments.lst not found; .*--pair en-es"):
        open_source("europarl-st", "test", data_dir=root, pair="en-de")


def test_europarl_st_refuses_segment_files_of_unequal_length(tmp_path):
    folder = _europarl_release(tmp_path, "talk1 0.50 1.25\ntalk1 2.00 3.00\n", "First part.\nSecond part.\n", "Seule.\n")
    with pytest.raises(SourceError, match="unequal length") as e:
        open_source("europarl-st", "test", data_dir=tmp_path, pair="en-fr")
    assert str(e.value).endswith(f"{folder / 'segments.lst'} has 2 lines, {folder / 'segments.en'} has 2 lines, "
                                 f"{folder / 'segments.fr'} has 1 lines")


def test_librisqa_over_local_librispeech(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "test-clean" / "61" / "70968"
    chapter.mkdir(parents=True)
    _write(chapter / "61-70968-0000.flac")
    (tmp_path / "LibriSQA-PartI-test.json").write_text(json.dumps([
        {"speech_path": "test-clean/61/70968/61-70968-0000.flac", "question": "Who spoke?", "answer": "A man.",
         "text": "HE BEGAN A CONFUSED COMPLAINT", "duration": 0.5},
        {"speech_path": "test-clean/61/70968/61-70968-0000.flac", "question": "What about?", "answer": "A complaint.",
         "text": "HE BEGAN A CONFUSED COMPLAINT", "duration": 0.5},
        {"speech_path": "test-clean/1/1/1-1-1.flac", "question": "?", "answer": "!", "text": "X", "duration": 1}]))
    src = open_source("librisqa", "test", data_dir=tmp_path)
    assert [it.id for it in src.items] == ["61-70968-0000-q1", "61-70968-0000-q2", "1-1-1-q1"]
    assert src.items[1].record["question"] == "What about?" and src.items[1].record["answer"] == "A complaint."
    assert src.items[0].load(16000).numel() == 8000
    assert src.items[2].error == f"audio 1-1-1.flac not found under {tmp_path}"


def test_spoken_squad_joins_a_passage_from_its_sentences(tmp_path):
    wavs = tmp_path / "dev_wav"
    wavs.mkdir()
    _write(wavs / "0_0_0.wav", seconds=0.5)
    _write(wavs / "0_0_1.wav", seconds=0.75)
    (tmp_path / "spoken_test-v1.1.json").write_text(json.dumps({"data": [{"title": "T", "paragraphs": [
        {"context": "the asr text of the passage", "qas": [{"id": "q1", "question": "What?", "answers": [{"text": "passage", "answer_start": 20}]}]}]}]}))
    src = open_source("spoken-squad", "test", data_dir=tmp_path)
    assert src.items[0].record == {"id": "q1", "text": "the asr text of the passage", "question": "What?",
                                   "answer": "passage", "src_lang": "en", "split": "test"}
    assert src.items[0].load(16000).numel() == 20000


def test_unknown_names_and_unreadable_items(tmp_path):
    with pytest.raises(SourceError, match="not a known source"):
        open_source("no-such-thing")
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "gone.wav", "text": "x"}) + "\n")
    item = open_source(str(tmp_path / "m.jsonl")).items[0]
    with pytest.raises(AudioError, match="gone.wav: no such audio file"):
        item.load(16000)
    assert synthesize("ok").numel() > 0
