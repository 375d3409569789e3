"""Speech data sources, each mapped to the store's record schema (see smap.data.store).

`open_source(name, split, ...)` lists a source's utterances without reading any audio: each
`Item` has its record (id, text and the optional fields) and a `load(sample_rate, max_seconds=None)`
that decodes or synthesises the waveform, (samples,) float32, raising `AudioError` when it cannot
(reason 'too long' for audio over `max_seconds`, found from the files' headers before decoding).

Names:
  tts                          the synthetic corpus (smap.data.corpus: eSpeak NG and SVOX Pico for
                               training, Flite for test-flite); splits train, dev, test, everyday,
                               train-qa, test-qa, test-flite
  FILE.jsonl / .json / .tsv / .csv
                               a manifest: one utterance per row with an audio path (relative to
                               the manifest, or to --audio-dir) and a transcript, optionally id,
                               start/end seconds, split and the schema's optional fields
  DIR                          a folder in the LibriSpeech layout (*.trans.txt beside the audio)
  librispeech, fleurs          Hugging Face datasets: one split's parquet files from the hub (FLEURS
                               from its parquet export) or its cache, or a local copy (a
                               `save_to_disk` folder, or parquet files in the hub's layout)
  librisqa                     LibriSQA questions over the user's LibriSpeech audio
  covost2                      CoVoST 2 translations of the user's Common Voice English clips,
                               joined with Common Voice's validated.tsv for transcripts and speakers
  europarl-st                  the user's copy of the EuroParl-ST release (m4a audio converted to flac)
  spoken-squad                 the user's copy of Spoken-SQuAD
Where data must be fetched by hand, `SourceError` says what to fetch and which option to point at it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from smap.audio import audio_seconds, check_length, load_audio

OPTIONAL_FIELDS = ("src_lang", "tgt_lang", "translation", "question", "answer", "choices", "speaker", "split")
AUDIO_FIELDS = ("audio", "audio_path", "audio_filepath", "path", "file", "wav", "filename")
TEXT_FIELDS = ("text", "transcript", "sentence", "transcription", "normalized_text")
ID_FIELDS = ("id", "utt_id", "key")
HUB_NAMES = ("librispeech", "fleurs", "librisqa", "covost2", "europarl-st", "spoken-squad")


# load(sample_rate, max_seconds=None) -> (samples,) float32; AudioError for audio over max_seconds
Loader = Callable[..., torch.Tensor]


class SourceError(ValueError):
    """A source that cannot be opened; the message says what is missing and how to provide it."""


@dataclass
class Item:
    """One utterance of a source, its audio not yet read."""

    id: str
    record: dict  # schema fields known before decoding: id, text, optional ones
    load: Loader | None
    error: str | None = None  # a problem found while listing (a malformed manifest row): skip it


@dataclass
class Source:
    name: str
    split: str
    items: list[Item]
    info: dict = field(default_factory=dict)  # what the report should say about the source


def open_source(name: str, split: str | None = None, *, data_dir: str | Path | None = None,
                audio_dir: str | Path | None = None, audio_field: str | None = None,
                text_field: str | None = None, pair: str | None = None, lang: str | None = None,
                part: int = 1, tts=None) -> Source:
    """List the utterances of a source (see the module docstring for names).

    data_dir: the user's local copy (a release folder, or a `save_to_disk` copy of a hub dataset);
    audio_dir, audio_field, text_field: for manifests; pair: 'en-XX' for speech translation
    (covost2, europarl-st); lang: the FLEURS language ('en_us'); part: LibriSQA part 1 or 2;
    tts: a `smap.data.corpus.CorpusConfig` for the synthetic corpus (default sizes if None).
    """
    if name == "tts":
        return _tts(split, tts)
    if name in HUB_NAMES:
        tgt_lang = None
        if pair:
            src, _, tgt_lang = pair.partition("-")
            if src != "en" or not tgt_lang:
                raise SourceError(f"--pair {pair}: expected en-XX (English speech into language XX)")
        opener = {"librispeech": _hub, "fleurs": _hub, "librisqa": _librisqa, "covost2": _covost2,
                  "europarl-st": _europarl_st, "spoken-squad": _spoken_squad}[name]
        return opener(name=name, split=split, data_dir=data_dir, tgt_lang=tgt_lang, lang=lang, part=part)
    path = _expand(name)
    if path.is_file():
        return _manifest(path, split, audio_dir, audio_field, text_field)
    if path.is_dir():
        return _librispeech_dir(path, split)
    raise SourceError(f"{name}: no such file or folder, and not a known source "
                      f"(tts, {', '.join(HUB_NAMES)}, a manifest file or a LibriSpeech-style folder)")


def _file_loader(path: Path, start: float = 0.0, end: float | None = None) -> Loader:
    return lambda sr, max_seconds=None: load_audio(path, sr, start, end, max_seconds)


# --- synthetic -------------------------------------------------------------------------------

def _tts(split: str | None, config) -> Source:
    from smap.data.corpus import SPLITS, TRAINING_VOICE_SPLITS, CorpusConfig, describe, plan

    config = config or CorpusConfig()
    split = split or "train"
    if split not in SPLITS:
        raise SourceError(f"tts: no split {split!r}; choose one of {', '.join(SPLITS)}")
    utterances = plan(config)
    items = [Item(u.id, u.record(), _synth_loader(u)) for u in utterances[split]]
    corpus = asdict(config)
    # Each setting is recorded only where it shapes the split, so that stores prepared before it existed stay
    # valid: the question vocabulary and the effects when asked for, the families where training voices speak.
    if not config.qa_vocab_voices:
        del corpus["qa_vocab_voices"]
    if not config.augment:
        del corpus["augment"]
    if split not in TRAINING_VOICE_SPLITS:
        del corpus["synthesizers"]
    return Source("tts", split, items, {"corpus": corpus, "splits": describe(utterances)})


def _synth_loader(utterance) -> Loader:
    def load(sr: int, max_seconds: float | None = None) -> torch.Tensor:
        wav = utterance.synthesize(sr)
        check_length(f"tts {utterance.id}", wav.numel() / sr, max_seconds)  # no header: its length is known once made
        return wav

    return load


# --- manifests and folders -------------------------------------------------------------------

def _manifest_rows(path: Path) -> list[tuple[int, dict | str]]:
    """(line or entry number, row or the reason it is unusable)."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[:e.start].count(b"\n") + 1
            raise SourceError(f"{path}: line {line} is not UTF-8 text "
                              f"(byte {raw[e.start]:#04x}); convert the file to UTF-8") from None
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]
        except csv.Error as e:
            raise SourceError(f"{path}: line {reader.line_num}: {e}") from None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise SourceError(f"{path}: not valid JSON ({e}); one object per line needs the .jsonl suffix") from None
        if not isinstance(data, list):
            raise SourceError(f"{path}: expected a JSON list of utterances")
        return [(i, row if isinstance(row, dict) else "not a JSON object") for i, row in enumerate(data, 1)]
    if suffix == ".jsonl":
        rows: list[tuple[int, dict | str]] = []
        with open(path, "rb") as f:  # decoded line by line: one bad line is skipped, not the file
            for lineno, raw_line in enumerate(f, 1):
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as e:
                    rows.append((lineno, f"not UTF-8 text (byte {raw_line[e.start]:#04x})"))
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    rows.append((lineno, row if isinstance(row, dict) else "not a JSON object"))
                except ValueError as e:
                    rows.append((lineno, f"malformed JSON ({e})"))
        return rows
    raise SourceError(f"{path}: unknown manifest type {suffix!r} (expected .jsonl, .json, .tsv or .csv)")


def _expand(path: str | Path) -> Path:
    """`~` expanded; a '~user' that names no user stays as written (and is then not found)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def _pick(columns: set[str], given: str | None, candidates: tuple[str, ...], path: Path, option: str) -> str | None:
    if given:
        if given not in columns:
            raise SourceError(f"{path}: no column {given!r} ({option}); columns: {', '.join(sorted(columns))}")
        return given
    return next((c for c in candidates if c in columns), None)


def _manifest(path: Path, split: str | None, audio_dir, audio_field: str | None, text_field: str | None) -> Source:
    rows = _manifest_rows(path)
    columns = set().union(*(r.keys() for _, r in rows if isinstance(r, dict)))
    audio_key = _pick(columns, audio_field, AUDIO_FIELDS, path, "--audio-field")
    if audio_key is None:
        raise SourceError(f"{path}: no audio path column (looked for {', '.join(AUDIO_FIELDS)}); "
                          f"name it with --audio-field")
    text_key = _pick(columns, text_field, TEXT_FIELDS, path, "--text-field")
    if text_key is None and not columns & {"translation", "answer"}:
        raise SourceError(f"{path}: no transcript column (looked for {', '.join(TEXT_FIELDS)}); "
                          f"name it with --text-field")
    if split and "split" not in columns:
        raise SourceError(f"{path}: --split {split} given but the manifest has no 'split' column")
    id_key = next((c for c in ID_FIELDS if c in columns), None)
    base = _expand(audio_dir) if audio_dir else path.parent
    items, seen = [], set()
    for lineno, row in rows:
        where = f"{path.name}:{lineno}"
        if isinstance(row, str):
            items.append(Item(where, {"id": where}, None, f"line {lineno}: {row}"))
            continue
        if split and row.get("split") != split:
            continue
        audio = str(row.get(audio_key) or "").strip()
        error = None if audio else f"line {lineno}: empty {audio_key!r}"
        try:
            start = float(row.get("start") or 0.0)
            end = float(row["end"]) if row.get("end") not in (None, "") else None
            if not (math.isfinite(start) and start >= 0 and (end is None or (math.isfinite(end) and end > start))):
                error, start, end = f"line {lineno}: start/end are not a span of seconds", 0.0, None
        except (TypeError, ValueError):
            error, start, end = f"line {lineno}: start/end are not numbers", 0.0, None
        uid = str(row.get(id_key) or "").strip() if id_key else ""
        # Without an id: the file's name, and the span when the row is a segment of a longer file.
        uid = uid or (Path(audio).stem + (f"_{start:g}_{end:g}" if end is not None else "") if audio else where)
        if error is None and uid in seen:
            error = f"line {lineno}: duplicate id {uid!r}"
        record = {"id": uid, "text": str(row.get(text_key) or "") if text_key else ""}
        record.update({k: row[k] for k in OPTIONAL_FIELDS if row.get(k) not in (None, "")})
        if error:
            items.append(Item(uid, record, None, error))
            continue
        seen.add(uid)
        audio_path = _expand(audio)
        items.append(Item(uid, record, _file_loader(audio_path if audio_path.is_absolute() else base / audio_path, start, end)))
    return Source(str(path), split or "all", items, {"manifest": str(path)})


def _librispeech_dir(root: Path, split: str | None) -> Source:
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise SourceError(f"{root}: no *.trans.txt files, so not a LibriSpeech-style folder "
                          "(a manifest must end in .jsonl, .json, .tsv or .csv)")
    items = []
    for trans in transcripts:
        with open(trans, encoding="utf-8") as f:
            for line in f:
                uid, _, text = line.strip().partition(" ")
                if not uid:
                    continue
                audio = next((trans.parent / f"{uid}{ext}" for ext in (".flac", ".wav")
                              if (trans.parent / f"{uid}{ext}").is_file()), trans.parent / f"{uid}.flac")
                record = {"id": uid, "text": text, "speaker": uid.split("-")[0], "src_lang": "en", "split": split or root.name}
                items.append(Item(uid, record, _file_loader(audio)))
    return Source(str(root), split or root.name, items, {"folder": str(root)})


# --- Hugging Face datasets and official releases -----------------------------------------------

@dataclass(frozen=True)
class _Hub:
    repo: str
    config: str
    split: str
    text: str
    id: str
    speaker: str | None


_HUB = {
    "librispeech": _Hub("openslr/librispeech_asr", "clean", "test", "text", "id", "speaker_id"),
    "fleurs": _Hub("google/fleurs", "en_us", "test", "raw_transcription", "id", None),
}
# LibriSpeech's own split names -> the hub dataset's (config, split).
LIBRISPEECH_SPLITS = {
    "test-clean": ("clean", "test"), "test-other": ("other", "test"),
    "dev-clean": ("clean", "validation"), "dev-other": ("other", "validation"),
    "train-clean-100": ("clean", "train.100"), "train-clean-360": ("clean", "train.360"),
    "train-other-500": ("other", "train.500"),
}


# The hub's parquet layout: {config}/{split}/NNNN.parquet, on the main branch (LibriSpeech) or in
# the parquet export of a script dataset (FLEURS: datasets 4 and later refuse loading scripts).
PARQUET_EXPORT = "refs/convert/parquet"
FLEURS_SPLITS = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}


def hub_request(repo: str, config: str, split: str, revision: str | None, data_dir=None) -> tuple[tuple, dict]:
    """The (args, kwargs) of the one `datasets.load_dataset` call that reads `split`, and only it:
    that split's parquet files of the hub repo at `revision`, or of a local copy in the same
    layout (DIR/{config}/{split}/ or DIR/{split}/). A whole configuration would fetch every split
    (LibriSpeech's clean: 30 GB for a 350 MB test set)."""
    if data_dir:
        folder = _expand(data_dir)
        files = [str(folder / config / split / "*.parquet"), str(folder / split / "*.parquet")]
        return ("parquet",), {"data_files": {split: files}, "split": split}
    kwargs = {"data_files": {split: [f"{config}/{split}/*.parquet"]}, "split": split}
    return (repo,), {**kwargs, **({"revision": revision} if revision else {})}


def _load_hf(name: str, repo: str, config: str, split: str, data_dir, revision: str | None = None):
    """A datasets.Dataset: a local copy (save_to_disk folder, or parquet files) if given, else the hub (or its cache)."""
    import datasets

    folder = _expand(data_dir) if data_dir else None
    try:
        if folder and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
            ds = datasets.load_from_disk(str(folder))
            return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
        args, kwargs = hub_request(repo, config, split, revision, folder)
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # offline, unknown split, no such files: the remedy is the same
        where = f"{folder}" if folder else f"{repo} ({config})"
        rev = f" --revision {revision}" if revision else ""
        raise SourceError(
            f"{name}: could not load split {split!r} from {where} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
            f"where the hub is reachable run: hf download {repo} --repo-type dataset{rev} --include "
            f"'{config}/{split}/*' --local-dir DIR, and pass --data-dir DIR"
            + (f" (or, with datasets<4, which still runs the loading script: python -c \"import datasets; "
               f"datasets.load_dataset('{repo}', '{config}', split='{split}', trust_remote_code=True)"
               f".save_to_disk('DIR')\")" if revision else "")) from None


def _hf_loader(ds, i: int, column: str = "audio") -> Loader:
    def load(sr: int, max_seconds: float | None = None) -> torch.Tensor:
        # decode=False: datasets 5 would decode with torchcodec, which needs FFmpeg; soundfile does not.
        audio = ds[i][column]
        return load_audio(audio.get("bytes") or audio["path"], sr, max_seconds=max_seconds)

    return load


def _hub(name: str, split: str | None, data_dir, lang: str | None, **_) -> Source:
    import datasets

    spec = _HUB[name]
    if name == "librispeech":
        split = split or "test-clean"
        if split not in LIBRISPEECH_SPLITS:
            raise SourceError(f"librispeech: no split {split!r}; choose one of {', '.join(LIBRISPEECH_SPLITS)}")
        config, hub_split = LIBRISPEECH_SPLITS[split]
        revision = None
    else:
        config, split = lang or spec.config, split or spec.split
        if split not in FLEURS_SPLITS:
            raise SourceError(f"fleurs: no split {split!r}; choose train, validation (dev) or test")
        split = hub_split = FLEURS_SPLITS[split]
        revision = PARQUET_EXPORT
    ds = _load_hf(name, spec.repo, config, hub_split, data_dir, revision)
    if "audio" not in ds.column_names or spec.text not in ds.column_names:
        raise SourceError(f"{name}: the dataset lacks the columns 'audio' and {spec.text!r} (has {', '.join(ds.column_names)})")
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    meta = ds.remove_columns("audio").to_dict()
    lang = config.split("_")[0] if name == "fleurs" else "en"
    items = []
    for i in range(len(ds)):
        # FLEURS repeats a sentence id for each of its speakers: the row number keeps ids unique.
        uid = str(meta[spec.id][i]) if name == "librispeech" else f"{meta[spec.id][i]}-{i}"
        record = {"id": uid, "text": str(meta[spec.text][i] or ""), "src_lang": lang, "split": split}
        if spec.speaker:
            record["speaker"] = str(meta[spec.speaker][i])
        items.append(Item(uid, record, _hf_loader(ds, i)))
    return Source(name, split, items, {"dataset": spec.repo, "config": config})


def _need_dir(name: str, data_dir, what: str) -> Path:
    folder = _expand(data_dir) if data_dir else None
    if folder is None or not folder.is_dir():
        raise SourceError(f"{name}: {what}" + (f" ({folder} is not a folder)" if folder else ""))
    return folder


def _audio_index(root: Path, pattern: str) -> dict[str, Path]:
    return {p.stem: p for p in root.rglob(pattern)}


def _librisqa(name: str, split: str | None, data_dir, part: int, **_) -> Source:
    split = split or "test"
    if split not in ("train", "test") or part not in (1, 2):
        raise SourceError(f"librisqa: no split {split!r} of part {part}; choose split train or test, part 1 or 2")
    need = ("LibriSpeech audio: download test-clean (for the test split) or train-clean-360 (for train) from "
            "https://www.openslr.org/12, unpack, and pass --data-dir to the folder that holds it")
    root = _need_dir(name, data_dir, f"needs {need}")
    folder = f"LibriSQA-Part{'I' * part}"
    meta_name = f"{folder}-{split}.json"
    local = next(iter(root.rglob(meta_name)), None)
    if local is None:
        try:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download("ZihanZhao/LibriSQA", f"{folder}/{meta_name}", repo_type="dataset"))
        except Exception as e:
            raise SourceError(f"librisqa: {meta_name} is neither under {root} nor fetchable from the hub "
                              f"({type(e).__name__}); download it from the dataset ZihanZhao/LibriSQA "
                              f"and put it under {root}") from None
    text = local.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except ValueError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    audio = _audio_index(root, "*.flac")
    if not audio:
        raise SourceError(f"librisqa: no .flac files under {root}; it needs {need}")
    items, counts = [], {}
    for row in rows:
        stem = Path(str(row.get("speech_path", ""))).stem
        counts[stem] = counts.get(stem, 0) + 1
        uid = f"{stem}-q{counts[stem]}"  # several questions may share one utterance
        # Part II: the question with its four options, and the letter of the right one.
        record = {"id": uid, "text": str(row.get("text") or ""), "src_lang": "en", "split": split,
                  "question": str(row.get("question") or row.get("question_and_option") or ""),
                  "answer": str(row.get("answer") or "")}
        if part == 2:
            record["choices"] = ["A", "B", "C", "D"]
        path = audio.get(stem)
        items.append(Item(uid, record, _file_loader(path) if path else None,
                          None if path else f"audio {stem}.flac not found under {root}"))
    return Source(name, split, items, {"metadata": str(local), "audio": str(root), "part": part})


# CoVoST 2's English -> X directions, in its own language codes (get_covost_splits.py).
COVOST_EN_XX = ("de", "ca", "zh-CN", "fa", "et", "mn", "tr", "ar", "sv-SE", "lv", "sl", "ta", "ja", "id", "cy")


def _covost_rows(path: Path) -> list[dict]:
    """Rows of a CoVoST or Common Voice TSV, read as CoVoST's loaders read them: tab-separated,
    no quoting (sentences hold quotes of their own), backslash escapes."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))


def _find(root: Path, name: str) -> Path | None:
    """The first file or folder called `name` under `root`, never looking inside a clips/ folder
    (Common Voice's holds a million files)."""
    for folder, dirs, files in os.walk(root):
        if name in files or name in dirs:
            return Path(folder) / name
        dirs[:] = sorted(d for d in dirs if d != "clips")
    return None


def _covost2(name: str, split: str | None, data_dir, tgt_lang: str | None, **_) -> Source:
    tgt, split = tgt_lang or "de", split or "test"
    code = next((c for c in COVOST_EN_XX if c.split("-")[0] == tgt), None)
    if code is None:
        raise SourceError(f"--pair en-{tgt}: CoVoST 2 translates English into "
                          f"{', '.join(c.split('-')[0] for c in COVOST_EN_XX)} only")
    if split not in ("train", "dev", "test"):
        raise SourceError(f"covost2: no split {split!r}; choose train, dev or test")
    tsv_name, split_name = f"covost_v2.en_{code}.tsv", f"covost_v2.en_{code}.{split}.tsv"
    need = (f"needs, under --data-dir: Common Voice English version 4 (cv-corpus-4-2019-12-10/en, from "
            f"https://commonvoice.mozilla.org/datasets: its clips/ and validated.tsv) and {tsv_name} (unpacked from "
            f"https://dl.fbaipublicfiles.com/covost/{tsv_name}.tar.gz), or {split_name} from get_covost_splits.py")
    root = _need_dir(name, data_dir, need)
    validated = _find(root, "validated.tsv")
    clips = validated.parent / "clips" if validated else _find(root, "clips")
    # get_covost_splits.py's output has done the join: path, sentence, translation, client_id.
    tsv = _find(root, split_name) or _find(root, tsv_name)
    if tsv is None or clips is None or not clips.is_dir() or (tsv.name == tsv_name and validated is None):
        missing = (f"no {tsv_name} (nor {split_name})" if tsv is None else "no clips/ folder" if clips is None
                   or not clips.is_dir() else f"no Common Voice validated.tsv (transcripts and speakers of {tsv.name})")
        raise SourceError(f"covost2: {missing} under {root}; it {need}")
    rows = _covost_rows(tsv)
    if tsv.name == tsv_name:
        # The release holds only path, translation and split: the transcript and the speaker are
        # Common Voice's, joined on path; train_covost rows are CoVoST's additions to train.
        voices = {r["path"]: r for r in _covost_rows(validated)}
        want = {"train": ("train", "train_covost")}.get(split, (split,))
        rows = [{**r, "sentence": voices.get(r["path"], {}).get("sentence"),
                 "client_id": voices.get(r["path"], {}).get("client_id")} for r in rows if r.get("split") in want]
    items = []
    for n, row in enumerate(rows, 2):  # line numbers: the header is line 1 (of the split file)
        uid = Path(row["path"]).stem
        record = {"id": uid, "text": (row.get("sentence") or "").strip(), "translation": row.get("translation") or "",
                  "src_lang": "en", "tgt_lang": tgt, "speaker": row.get("client_id") or "", "split": split}
        error = None if record["text"] else (
            f"{row['path']}: no transcript in {validated}" if tsv.name == tsv_name else f"{tsv}:{n}: empty sentence")
        items.append(Item(uid, record, None if error else _file_loader(clips / row["path"]), error))
    if not items:
        raise SourceError(f"covost2: {tsv} has no rows of split {split!r} (splits: train, dev, test)")
    if all(it.error for it in items):
        raise SourceError(f"covost2: none of the {len(items)} {split} clips of {tsv.name} has a transcript in "
                          f"{validated or tsv} (Common Voice English version 4 is the one CoVoST 2 was made from)")
    return Source(name, split, items, {"tsv": str(tsv), "clips": str(clips),
                                       **({"validated": str(validated)} if tsv.name == tsv_name else {})})


M4A_TO_FLAC = 'for f in *.m4a; do ffmpeg -loglevel error -i "$f" -ac 1 -ar 16000 "${f%.m4a}.flac"; done'


def _europarl_st(name: str, split: str | None, data_dir, tgt_lang: str | None, **_) -> Source:
    tgt, split, src = tgt_lang or "es", split or "test", "en"
    need = ("needs the EuroParl-ST release (v1.1, from https://www.mllp.upv.es/europarl-st/) unpacked; pass "
            "--data-dir to the folder that holds en/")
    root = _need_dir(name, data_dir, need)
    folder = root / src / tgt / split
    if not (folder / "segments.lst").is_file():
        raise SourceError(f"europarl-st: {folder}/segments.lst not found; it {need} (with --pair en-es, en-fr, "
                          f"en-de, en-it, ... and --split train, dev or test)")
    files = [folder / "segments.lst", folder / f"segments.{src}", folder / f"segments.{tgt}"]
    try:
        segments, sources, targets = (f.read_text(encoding="utf-8").splitlines() for f in files)
    except OSError as e:
        raise SourceError(f"europarl-st: {e.filename}: {e.strerror}") from None
    if not len(segments) == len(sources) == len(targets):
        counts = ", ".join(f"{f} has {len(lines)} lines" for f, lines in zip(files, (segments, sources, targets)))
        raise SourceError(f"europarl-st: segment files of unequal length, so lines cannot be paired: {counts}")
    audios = root / src / "audios"
    items, m4a_only = [], set()
    for n, (seg, text, translation) in enumerate(zip(segments, sources, targets), 1):
        try:
            talk, start, end = seg.split()
            span = float(start), float(end)
        except ValueError:
            items.append(Item(f"segments.lst:{n}", {"id": f"segments.lst:{n}"}, None,
                              f"{files[0]}:{n}: expected 'TALK START END', got {seg!r}"))
            continue
        audio = next((audios / f"{talk}{ext}" for ext in (".flac", ".wav") if (audios / f"{talk}{ext}").is_file()), None)
        if audio is None and (audios / f"{talk}.m4a").is_file():
            m4a_only.add(talk)
        uid = f"{talk}_{start}_{end}"
        record = {"id": uid, "text": text, "translation": translation, "src_lang": src, "tgt_lang": tgt, "split": split}
        items.append(Item(uid, record, _file_loader(audio or audios / f"{talk}.flac", *span)))
    if m4a_only:
        raise SourceError(f"europarl-st: {len(m4a_only)} talks in {audios} are m4a only (as the release ships them), "
                          f"which soundfile cannot decode; convert them once: cd {audios} && {M4A_TO_FLAC}")
    return Source(name, split, items, {"release": str(root)})


def _spoken_squad(name: str, split: str | None, data_dir, **_) -> Source:
    split = split or "test"
    if split not in ("train", "test"):
        raise SourceError(f"spoken-squad: no split {split!r}; choose train or test")
    need = ("needs Spoken-SQuAD (https://github.com/chiahsuan156/Spoken-SQuAD): spoken_train-v1.1.json or "
            "spoken_test-v1.1.json and the train_wav/ or dev_wav/ folder, under --data-dir")
    root = _need_dir(name, data_dir, need)
    meta = next(iter(root.rglob(f"spoken_{split}-v1.1.json")), None)
    wavs = next((p for p in root.rglob("train_wav" if split == "train" else "dev_wav") if p.is_dir()), None)
    if meta is None or wavs is None:
        raise SourceError(f"spoken-squad: {'no spoken_' + split + '-v1.1.json' if meta is None else 'no wav folder'} under {root}; it {need}")
    items = []
    for a, article in enumerate(json.loads(meta.read_text(encoding="utf-8"))["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            # A passage is recorded sentence by sentence: {article}_{paragraph}_{sentence}.wav
            parts, s = [], 0
            while (wavs / f"{a}_{p}_{s}.wav").is_file():
                parts.append(wavs / f"{a}_{p}_{s}.wav")
                s += 1
            for qa in paragraph["qas"]:
                answers = qa.get("answers") or [{}]
                record = {"id": str(qa["id"]), "text": paragraph.get("context", ""), "question": qa["question"],
                          "answer": answers[0].get("text", ""), "src_lang": "en", "split": split}
                items.append(Item(record["id"], record, _concat_loader(parts) if parts else None,
                                  None if parts else f"no audio {a}_{p}_0.wav in {wavs}"))
    return Source(name, split, items, {"metadata": str(meta), "audio": str(wavs)})


def _concat_loader(paths: list[Path]) -> Loader:
    def load(sr: int, max_seconds: float | None = None) -> torch.Tensor:
        if max_seconds is not None:  # the parts' sum, from their headers, before any is decoded
            name = f"{paths[0]}" + (f" + {len(paths) - 1} more" if len(paths) > 1 else "")
            check_length(name, sum(audio_seconds(p) for p in paths), max_seconds)
        return torch.cat([load_audio(p, sr) for p in paths])

    return load

