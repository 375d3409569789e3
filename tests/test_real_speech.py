"""recipes/real_speech.py: the transcript parsers on fixtures shaped like the sdists' files, and the
extraction from fake sdists (no network: pip is never run, or is replaced)."""

import importlib.util
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO
from smap.data.sources import open_source


def _recipe():
    spec = importlib.util.spec_from_file_location("real_speech", REPO / "recipes" / "real_speech.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rs = _recipe()

# pocketsphinx-5.1.1/test/data/librivox/transcription (first two lines) and cards/cards.transcription
LIBRIVOX = (
    "<s> and mister john dashwood had then leisure to consider how much there might be prudently in his power "
    "to do for them </s> (sense_and_sensibility_01_austen_64kb-0870)\n"
    "<s> he was not an ill disposed young man </s> (sense_and_sensibility_01_austen_64kb-0880)\n"
)
CARDS = (
    "<s> ten of clubs  </s> (001)\n"
    "<s> four queen of clubs  </s> (002)\n"
    "<s> seven of clubs  </s> (003)\n"
    "<s> five five  </s> (004)\n"
    "<s> eight of spades four of clubs seven of hearts  </s> (005)\n"
)
# praatio-6.2.2/examples/files/bobby_words.TextGrid: the long format ("key = value" lines)
BOBBY = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0 
xmax = 1.194625 
tiers? <exists> 
size = 2 
item []: 
    item [1]:
        class = "IntervalTier" 
        name = "word" 
        xmin = 0.0124716553288 
        xmax = 1.18979591837 
        intervals: size = 6 
        intervals [1]:
            xmin = 0.0124716553288 
            xmax = 0.06469123242311078 
            text = "" 
        intervals [2]:
            xmin = 0.06469123242311078 
            xmax = 0.41156462585 
            text = "BOBBY" 
        intervals [3]:
            xmin = 0.41156462585 
            xmax = 0.6576881808447274 
            text = "RIPPED" 
        intervals [4]:
            xmin = 0.6576881808447274 
            xmax = 0.740816326531 
            text = "THE" 
        intervals [5]:
            xmin = 0.740816326531 
            xmax = 1.1171482864527198 
            text = "LEDGER" 
        intervals [6]:
            xmin = 1.1171482864527198 
            xmax = 1.18979591837 
            text = "" 
    item [2]:
        class = "IntervalTier" 
        name = "phrase" 
        xmin = 0 
        xmax = 1.194625 
        intervals: size = 1 
        intervals [1]:
            xmin = 0 
            xmax = 1.194625 
            text = "BOBBY RIPPED THE LEDGER" 
'''
# praatio-6.2.2/examples/files/mary.TextGrid: the short format (values only), CRLF, UTF-8 IPA, a point tier
MARY = "\r\n".join([
    'File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", "1.869687", "<exists>", "3",
    '"IntervalTier"', '"phone"', "0", "1.869687", "2",
    "0", "0.3154201182247563", '""', "0.3154201182247563", "0.38526757369599995", '"ə"',
    '"IntervalTier"', '"word"', "0", "1.869687", "6",
    "0", "0.3154201182247563", '""', "0.3154201182247563", "0.6755499913498981", '"mary"',
    "0.6755499913498981", "0.9839070294779999", '"rolled"', "0.9839070294779999", "1.063725623583", '"the"',
    "1.063725623583", "1.5182538944627297", '"barrel"', "1.5182538944627297", "1.869687", '""',
    '"TextTier"', '"pitch"', "0", "1.869687", "2", "0.5978689404359245", '"120"', "0.8264598697308528", '"85"',
    "",
])
# pocketsphinx-5.1.1/test/unit/test_jsgf.c:67 and cython/test/alignment_test.py:60
JSGF_C = '    TEST_EQUAL(0, strcmp("go forward ten meters", hyp));\n'
ALIGN_PY = '        decoder.set_align_text("feels like these days go on forever")\n'


def test_sphinx_transcription_lines_give_words_by_utterance_id():
    assert rs.parse_sphinx_transcription(LIBRIVOX + "\n") == {
        "sense_and_sensibility_01_austen_64kb-0870": "and mister john dashwood had then leisure to consider how "
                                                     "much there might be prudently in his power to do for them",
        "sense_and_sensibility_01_austen_64kb-0880": "he was not an ill disposed young man"}
    assert rs.parse_sphinx_transcription(CARDS)["001"] == "ten of clubs"  # the double space before </s> goes
    # a decoder's .hyp file: no sentence markers, a score after the id
    assert rs.parse_sphinx_transcription("four queen of clubs (002 -3714)\n") == {"002": "four queen of clubs"}
    with pytest.raises(ValueError, match="line 2"):
        rs.parse_sphinx_transcription("<s> ten </s> (001)\njust words\n")


def test_textgrid_word_tiers_in_the_long_and_the_short_format():
    assert rs.textgrid_words(BOBBY, "word") == "BOBBY RIPPED THE LEDGER"
    tiers = rs.parse_textgrid(BOBBY)
    assert list(tiers) == ["word", "phrase"]
    assert tiers["word"][1] == (0.06469123242311078, 0.41156462585, "BOBBY")

    # the ELAN flavour of the long format: "item[1]:", "intervals [1]" without a colon
    assert rs.parse_textgrid(BOBBY.replace("item [1]:", "item[1]:").replace("]:\n            xmin", "]\n            xmin")) == tiers

    assert rs.textgrid_words(MARY, "word") == "mary rolled the barrel"
    tiers = rs.parse_textgrid(MARY)
    assert tiers["phone"][1][2] == "ə"
    assert tiers["pitch"] == [(0.5978689404359245, 0.5978689404359245, "120"),
                              (0.8264598697308528, 0.8264598697308528, "85")]
    with pytest.raises(ValueError, match="no tier 'words'"):
        rs.textgrid_words(MARY, "words")
    with pytest.raises(ValueError, match="ends early"):
        rs.parse_textgrid(MARY[:MARY.index('"rolled"')])
    # a doubled quote is one quote, as Praat writes it
    one = "\n".join(['"ooTextFile"', '"TextGrid"', "0", "1", "<exists>", "1", '"IntervalTier"', '"w"', "0", "1",
                     "1", "0", "1", '"say ""hi"""'])
    assert rs.textgrid_words(one, "w") == 'say "hi"'


def test_transcripts_from_test_code_must_be_a_string_literal_there():
    assert rs.code_transcript(JSGF_C, "go forward ten meters") == "go forward ten meters"
    assert rs.code_transcript(ALIGN_PY, "feels like these days go on forever") == "feels like these days go on forever"
    with pytest.raises(ValueError, match="no string literal"):
        rs.code_transcript(JSGF_C, "go forward ten")


def test_numbers_are_written_as_words():
    assert rs.number_words(0) == "zero"
    assert rs.number_words(10) == "ten"
    assert rs.number_words(40) == "forty"
    assert rs.number_words(2934) == "two thousand nine hundred thirty four"
    assert rs.number_words(1_000_005) == "one million five"
    assert rs.spell_numbers("go forward 10 meters, 5 5") == "go forward ten meters, five five"
    assert rs.spell_numbers("mp3 stays") == "mp3 stays"  # digits inside a word are no number
    assert rs.clean_transcript(" BOBBY  RIPPED the 2 ") == "bobby ripped the two"


def test_raw_pcm_is_16_khz_little_endian():
    wav = rs.decode_audio(np.array([0, 16384, -32768], "<i2").tobytes(), "test/data/goforward.raw")
    assert wav.tolist() == [0.0, 0.5, -1.0]
    with pytest.raises(ValueError, match="odd byte count"):
        rs.decode_audio(b"\x00\x01\x02", "x.raw")


# --- a fake sdist of each package ------------------------------------------------------------

def _wav_bytes(seconds: float, sr: int) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _short_textgrid(tier: str, words: list[str]) -> str:
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", "1", "<exists>", "1",
             '"IntervalTier"', f'"{tier}"', "0", "1", str(len(words))]
    for i, w in enumerate(words):
        lines += [str(i / len(words)), str((i + 1) / len(words)), f'"{w}"']
    return "\n".join(lines) + "\n"


def _sdist_files() -> dict[str, dict[str, bytes]]:
    """Every file the recipe reads, by package: short tones for audio, the transcripts as above."""
    librivox = "".join(f"<s> reading {i} </s> (sense_and_sensibility_01_austen_64kb-{n})\n"
                       for i, n in enumerate(("0870", "0880", "0890", "0920", "0930"), 1))
    files = {
        "pocketsphinx": {
            "test/data/librivox/transcription": librivox.encode(),
            "test/data/cards/cards.transcription": CARDS.encode(),
            "test/unit/test_jsgf.c": JSGF_C.encode(),
            "cython/test/alignment_test.py": ALIGN_PY.encode(),
            "test/data/goforward.raw": np.zeros(1600, "<i2").tobytes(),  # 0.1 s
        },
        "praatio": {
            "examples/files/bobby_words.TextGrid": BOBBY.encode(),
            "examples/files/mary.TextGrid": MARY.encode(),
            "examples/files/damon_set_test.TextGrid": _short_textgrid("words", ["damon", "fried", "the", "omelet"]).encode(),
        },
    }
    for clip in rs.CLIPS:
        if clip.audio.endswith(".wav"):
            files[clip.package][clip.audio] = _wav_bytes(0.2, 48000 if clip.package == "praatio" else 16000)
    return files


def _tarball(path, top: str, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _sources(tmp_path, drop: str | None = None) -> dict:
    """pocketsphinx as an sdist tarball, praatio as an unpacked folder: both kinds of source."""
    files = _sdist_files()
    files["pocketsphinx"].pop(drop, None)
    tarball = _tarball(tmp_path / "pocketsphinx-5.1.1.tar.gz", "pocketsphinx-5.1.1", files["pocketsphinx"])
    folder = tmp_path / "praatio-6.2.2"
    for rel, data in files["praatio"].items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return {"pocketsphinx": tarball, "praatio": folder}


def test_write_manifest_extracts_every_clip_and_a_second_run_does_nothing(tmp_path):
    out = tmp_path / "real"
    manifest = rs.write_manifest(out, sources=_sources(tmp_path))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["audio"] for r in rows] == [f"wavs/{c.id}.wav" for c in rs.CLIPS]
    by_id = {r["audio"][5:-4]: r for r in rows}
    assert by_id["librivox-0920"]["text"] == "reading four"  # a digit in a reference is spelled out
    assert by_id["cards-002"]["text"] == "four queen of clubs"
    assert by_id["goforward"]["text"] == "go forward ten meters"
    assert by_id["bobby"]["text"] == "bobby ripped the ledger"
    assert by_id["damon"]["text"] == "damon fried the omelet"
    assert by_id["goforward"]["source"] == "pocketsphinx==5.1.1:test/data/goforward.raw"
    assert {r["split"] for r in rows} == {"test"} and all(r["licence"] for r in rows)
    for r, clip in zip(rows, rs.CLIPS):
        info = sf.info(out / r["audio"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames == (1600 if clip.audio.endswith(".raw") else 3200)  # 48 kHz resampled to 16 kHz
    assert (out / rs.STAMP).read_text() == rs.stamp_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left

    source = open_source(str(manifest), "test")  # what `smap prepare --dataset manifest --split test` reads
    assert [item.error for item in source.items] == [None] * len(rs.CLIPS)
    assert source.items[0].load(16000).shape == (3200,)

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert rs.write_manifest(out, sources={}) == manifest  # finished: no source needed, nothing written
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_missing_file_in_an_sdist_leaves_no_out_dir(tmp_path):
    out = tmp_path / "real"
    with pytest.raises(rs.SourceError, match="lacks test/data/goforward.raw"):
        rs.write_manifest(out, sources=_sources(tmp_path, drop="test/data/goforward.raw"))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_folder_that_is_not_a_finished_split_is_never_overwritten(tmp_path):
    out = tmp_path / "real"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(rs.SourceError, match="not a finished split"):
        rs.write_manifest(out, sources=_sources(tmp_path))
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_pip_failure_is_one_line_naming_the_package_and_exit_1(tmp_path, monkeypatch, capsys):
    def fail(cmd, **_):
        assert cmd[1:4] == ["-m", "pip", "download"] and "pocketsphinx==5.1.1" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the "
                                           "requirement pocketsphinx==5.1.1\nERROR: No matching distribution "
                                           "found for pocketsphinx==5.1.1\n")
    monkeypatch.setattr(rs.subprocess, "run", fail)
    out = tmp_path / "real"
    with pytest.raises(SystemExit) as exit_:
        rs.main([str(out)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err == ("error: pip could not download pocketsphinx==5.1.1: "
                   "ERROR: No matching distribution found for pocketsphinx==5.1.1\n")
    assert not out.exists()


def test_a_downloaded_file_must_be_the_pinned_sdist(tmp_path, monkeypatch):
    def fake(cmd, **_):
        dest = cmd[cmd.index("-d") + 1]
        open(f"{dest}/pocketsphinx-5.1.1.tar.gz", "wb").write(b"not it")
        return subprocess.CompletedProcess(cmd, 0, "", "")
    monkeypatch.setattr(rs.subprocess, "run", fake)
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(rs.SourceError, match="pocketsphinx==5.1.1: .* is not the pinned sdist"):
        rs.download_sdist("pocketsphinx", dest)
