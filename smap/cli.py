"""The `smap` command line: parse options, call the core modules, print. Nothing else lives here."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from smap.progress import literal, printable
from smap.prompts import DEFAULT_LAYOUT, SPOKEN_QUESTION

app = typer.Typer(
    name="smap",
    help="Speech LLMs the SpeechMapper way: prepare features, pretrain a mapper without the LLM, "
    "attach it to a frozen LLM in ~1K steps, infer and evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
console = Console(stderr=True)

# Help panels: the paper's options stay in the first; the others gather by what they tune.
LOOP = "Training loop"
BEYOND = "Beyond the paper"
DECODING = "Decoding"
ENCODING = "Encoder and batching"
TTS = "Synthetic speech (--dataset tts)"
LOCAL = "Local data and manifests"
SCORING = "Scoring"

# The training loop, shared by pretrain and attach (smap.training.LoopConfig); each command gives its defaults.
Steps = Annotated[int, typer.Option(min=1, help="Optimiser steps: the run's budget; the cosine schedule reaches zero at the last.", rich_help_panel=LOOP)]
Lr = Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate.", rich_help_panel=LOOP)]
Warmup = Annotated[int, typer.Option(min=0, help="Linear warm-up steps before the cosine decay.", rich_help_panel=LOOP)]
WeightDecay = Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.", rich_help_panel=LOOP)]
TrainFrames = Annotated[int, typer.Option("--max-frames", min=1, help="Batch budget in input feature frames (padding included); batches are bucketed by length.", rich_help_panel=LOOP)]
GradAccum = Annotated[int, typer.Option(min=1, help="Gradient accumulation steps per optimiser step.", rich_help_panel=LOOP)]
Clip = Annotated[float, typer.Option(min=0.0, help="Gradient-norm clipping (0: off).", rich_help_panel=LOOP)]
PRECISION_HELP = ("'auto': bf16 where the device computes it natively (a GPU from Ampere on; a CPU with AVX512-BF16, AMX "
                  "or Arm BF16), fp16 on an older GPU, else fp32, since a CPU emulates bf16 far slower than fp32; "
                  "'no' (fp32), 'fp16' or 'bf16' to choose. The choice and why are printed, and kept in the run's report.")
MixedPrecision = Annotated[str, typer.Option(help=PRECISION_HELP + " In attach the frozen LLM is loaded in it.", rich_help_panel=LOOP)]
LoadPrecision = Annotated[str, typer.Option("--mixed-precision", help=PRECISION_HELP + " The frozen LLMs are loaded in it.", rich_help_panel=DECODING)]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, batching, dropout and drawn instruction phrasings.", rich_help_panel=LOOP)]
SaveEvery = Annotated[int, typer.Option(min=1, help="Checkpoint every N steps (and at the end).", rich_help_panel=LOOP)]
EvalEvery = Annotated[int, typer.Option(min=1, help="Validate every N steps (and at the end).", rich_help_panel=LOOP)]
LogEvery = Annotated[int, typer.Option(min=1, help="Log the training loss and learning rate every N steps (and at the last): a row in OUT/log.jsonl with the run's seconds so far, to the millisecond, a TensorBoard point and the progress line's figures. 1 logs every step, so that the differences of the seconds time each step (benchmarks/step_cost.py). Training is the same whatever N, and a --resume may change it.", rich_help_panel=LOOP)]
EvalAtStart = Annotated[bool, typer.Option(help="Also validate before the first step: the starting point of the learning curve.", rich_help_panel=LOOP)]
Keep = Annotated[int, typer.Option(min=1, help="Checkpoints kept on disk.", rich_help_panel=LOOP)]
Resume = Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out, exactly where it stopped (refused if the --train stores changed since).", rich_help_panel=LOOP)]
Overwrite = Annotated[bool, typer.Option(help="Replace the run in --out: its checkpoints, logs, reports and model are removed first. Without it (or --resume), a non-empty --out is refused.", rich_help_panel=LOOP)]
TimeBudget = Annotated[Optional[float], typer.Option(help="Stop after this many minutes, with a checkpoint and the model saved.", rich_help_panel=LOOP)]
Workers = Annotated[int, typer.Option(min=0, help="DataLoader worker processes that read and collate batches beside the training step: 2-4 on a GPU, 0 on a small CPU, where they compete with the step.", rich_help_panel=LOOP)]
# Decoding options, shared by infer and evaluate.
NumBeams = Annotated[int, typer.Option(min=1, help="1: greedy search; more: beam search.", rich_help_panel=DECODING)]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Longest output in tokens (an ASR output may also be capped: --asr-cap).", rich_help_panel=DECODING)]
DecodeFrames = Annotated[int, typer.Option("--max-frames", min=1, help="Speech batches: budget in feature frames.", rich_help_panel=DECODING)]
AsrSlack = Annotated[int, typer.Option(min=0, help="With --asr-cap: an ASR output has at most as many tokens as the LLM reads in the speech's place (speech vectors; the text's tokens for transcript and cascade), plus this.", rich_help_panel=BEYOND)]
AsrCap = Annotated[bool, typer.Option(help="Cap each ASR output's length by its input (--asr-slack): a weakly attached model otherwise runs on past its speech. Not in the paper's decoding.", rich_help_panel=BEYOND)]
FirstLine = Annotated[bool, typer.Option(help="Keep only an ASR output's first line: what a chat model adds after a line break is commentary. Not in the paper's decoding.", rich_help_panel=BEYOND)]
NoRepeatNgram = Annotated[int, typer.Option(min=0, help="Ban any n-gram of this size from appearing twice in an output (0: off): small attached models can loop ('on the other hand on the other hand').", rich_help_panel=BEYOND)]


def _fail(message: object) -> None:
    """One red line on stderr, exit code 2; the message is data (it may quote an id or a path)."""
    console.print(f"[bold red]error:[/] {literal(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _precision(requested: str, device: Optional[str] = None):
    """The precision `--mixed-precision` resolves to on `device` (smap.precision); a bad name stops here,
    before anything loads. The caller prints it once the models are loaded."""
    from smap.precision import resolve

    return resolve(requested, device)


def _converter(ctx: typer.Context, param):
    """A config value checked as the command line checks option `param`'s (its type and range), and
    YAML's booleans kept to the flags: `resume: 1`, `steps: true` and `mixed_precision: no` (a YAML
    boolean) are refused rather than cast."""

    def convert(value):
        if param.multiple or param.nargs == -1:
            value = value if isinstance(value, list) else [value]  # `train: data/x` is a list of one
        elif isinstance(value, list):
            raise ValueError("expected one value, not a list")
        flag = getattr(param, "is_flag", False)
        for v in value if isinstance(value, list) else [value]:
            if flag and not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {v!r}")
            if not flag and isinstance(v, bool):
                raise ValueError(f"expected a value, got the YAML boolean {v!r} (quote it for the text)")
        try:
            return param.process_value(ctx, value)
        except typer.BadParameter as e:
            raise ValueError(e.message) from None

    return convert


def _read_config(ctx: typer.Context, path: Optional[Path]) -> Optional[Path]:
    """--config: the file's values become the command's defaults (`ctx.default_map`), so that a flag
    given on the command line wins; an unknown key or a bad value stops here, naming both."""
    if path is None or ctx.resilient_parsing:
        return path
    from smap.config import ConfigError, load_config

    params = {p.name: p for p in ctx.command.params if p.expose_value and p.name not in ("config", "help")}
    try:
        values = load_config(path, {name: _converter(ctx, p) for name, p in params.items()})
    except ConfigError as e:
        _fail(e)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


Config = Annotated[Optional[Path], typer.Option(
    "--config", is_eager=True, callback=_read_config, show_default=False,
    help="A YAML file of option values, keys as the option names with underscores (`time_budget: 16`, `train: [a, b]`); "
         "options given on the command line win. The recipes' are in recipes/configs/.")]


def _version(value: bool) -> None:
    if value:
        from smap import __version__

        print(f"smap {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    """Speech LLMs the SpeechMapper way."""


class UserError(Exception):
    """An error the user can fix; printed as one line, exit code 2."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from smap.data.store import StoreError
    from smap.fileio import FolderBusyError
    from smap.llm import LLMSpecError
    from smap.training import TrainingError

    # OSError: a missing file, or a full disk or a denied folder while writing (checkpoints are kept).
    return (UserError, StoreError, FolderBusyError, LLMSpecError, TrainingError, OSError, ValueError)


def friendly(fn):
    """Turn expected errors into one red line and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _expected_errors() as e:
            _fail(e)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished shards and checkpoints are kept; re-run to resume")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@friendly
def prepare(
    dataset: Annotated[str, typer.Option(help="What to encode: 'tts' (synthetic eSpeak speech, no download), 'librispeech', 'fleurs', 'librisqa', 'covost2', 'europarl-st', 'spoken-squad', a manifest (.jsonl, .json, .tsv or .csv: one utterance per row with an audio path and a transcript) or a folder in the LibriSpeech layout (*.trans.txt beside the audio).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Feature store folder to write (one per split). Re-running with the same --out resumes: finished shards are kept, not encoded again.", show_default=False)],
    split: Annotated[Optional[str], typer.Option(help="Which part: tts: train, dev, test, everyday, train-qa, test-qa (default train); librispeech: test-clean, test-other, dev-clean, dev-other, train-clean-100, train-clean-360, train-other-500; fleurs: train, validation (or dev), test; covost2, europarl-st: train, dev, test; librisqa, spoken-squad: train, test. A manifest: rows whose 'split' column matches (default: all rows).")] = None,
    encoder: Annotated[str, typer.Option(help="Frozen speech encoder: 'whisper-tiny.en' (embedded CTranslate2 default), 'ct2:DIR' (a CTranslate2 Whisper), or a transformers checkpoint folder or hub id ('hf:' optional): SeamlessM4T-v2 (the paper's: facebook/seamless-m4t-v2-large), Whisper, wav2vec 2.0, HuBERT, mHuBERT-147. Options may follow as a query: 'hf:ID?layer=18'.")] = "whisper-tiny.en",
    layer: Annotated[Optional[str], typer.Option(help="transformers encoders: take the raw output of transformer layer N (1-based) instead of the final output. SeamlessM4T: 'adaptor' (default, ~6 frames/s after its length adaptor) or N (a conformer layer, 50 frames/s).", rich_help_panel=ENCODING)] = None,
    window: Annotated[Optional[bool], typer.Option("--window/--no-window", help="CTranslate2 Whisper: pad every clip to Whisper's 30 s window, as in its training, instead of to the longest clip of the batch (far more compute on short clips). Either way a clip over 30 s is encoded in 30 s windows whose frames are joined.", rich_help_panel=ENCODING)] = None,
    device: Annotated[Optional[str], typer.Option(help="'cpu', 'cuda' or 'auto' (a GPU if there is one). Under `accelerate launch`, each process's own device.", rich_help_panel=ENCODING)] = None,
    dtype: Annotated[Optional[str], typer.Option(help="transformers encoders: float32, float16 or bfloat16.", rich_help_panel=ENCODING)] = None,
    compute_type: Annotated[Optional[str], typer.Option(help="CTranslate2: int8 (CPU default), float32, float16 (GPU default), int8_float16, ...", rich_help_panel=ENCODING)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", "--source", help="Your local copy of the data: the EuroParl-ST release, Common Voice clips with the CoVoST 2 TSV, Spoken-SQuAD, LibriSpeech audio for LibriSQA, or a `save_to_disk` copy of a hub dataset (librispeech, fleurs). An error says what to fetch when it is missing.", rich_help_panel=LOCAL)] = None,
    pair: Annotated[Optional[str], typer.Option(help="Speech translation pair en-XX: covost2 (en-de, en-zh, ...; default en-de), europarl-st (en-es, en-fr, en-de, en-it; default en-es).", rich_help_panel=LOCAL)] = None,
    lang: Annotated[Optional[str], typer.Option(help="fleurs: language config (default en_us).", rich_help_panel=LOCAL)] = None,
    part: Annotated[int, typer.Option(min=1, max=2, help="librisqa: part 1 (free-form answers) or 2 (multiple choice).", rich_help_panel=LOCAL)] = 1,
    audio_dir: Annotated[Optional[Path], typer.Option(help="Manifests: folder that relative audio paths start from (default: the manifest's folder).", rich_help_panel=LOCAL)] = None,
    audio_field: Annotated[Optional[str], typer.Option(help="Manifests: the audio path column (default: the first of audio, audio_path, audio_filepath, path, file, wav, filename).", rich_help_panel=LOCAL)] = None,
    text_field: Annotated[Optional[str], typer.Option(help="Manifests: the transcript column (default: the first of text, transcript, sentence, transcription, normalized_text).", rich_help_panel=LOCAL)] = None,
    seed: Annotated[int, typer.Option(help="tts: seed of the corpus plan (sentences, voices, rates); the same seed gives the same audio.", rich_help_panel=TTS)] = 0,
    tts_train: Annotated[int, typer.Option(min=0, help="tts: training sentences (WordNet usage examples).", rich_help_panel=TTS)] = 3000,
    tts_dev: Annotated[int, typer.Option(min=0, help="tts: dev sentences (held-out sentences, training voices).", rich_help_panel=TTS)] = 200,
    tts_test: Annotated[int, typer.Option(min=0, help="tts: test sentences (held-out sentences and voices).", rich_help_panel=TTS)] = 300,
    voices_per_sentence: Annotated[int, typer.Option(min=1, help="tts: voices speaking each training sentence.", rich_help_panel=TTS)] = 1,
    voices_per_question: Annotated[int, typer.Option(min=1, help="tts: voices speaking each training question (train-qa).", rich_help_panel=TTS)] = 8,
    vocab: Annotated[int, typer.Option(min=0, help="tts: held-out sentences use only the N most frequent words of the text, and so do training sentences while there are any; more training sentences come from the rest, the commonest words first (0: no limit).", rich_help_panel=TTS)] = 5000,
    qa_vocab_voices: Annotated[int, typer.Option(min=0, help="tts: add to train the sentences of smap/resources/qa_vocabulary_sentences.txt, written to use the spoken questions' words that the WordNet text lacks (countries, months, animals...), each in N training voices (0: not added). Every split must be prepared with the same value.", rich_help_panel=TTS)] = 0,
    accents: Annotated[str, typer.Option(help="tts: comma list of eSpeak English accents: en-us, en-us-nyc, en, en-gb-x-rp, en-gb-x-gbclan, en-029, en-gb-scotland. Each is spoken by 16 training and 4 held-out voice variants.", rich_help_panel=TTS)] = "en-us",
    tts_augment: Annotated[str, typer.Option(help="tts: comma list of signal effects on the training utterances (train, train-qa): speed (factor 0.9-1.1), noise (white, 10-30 dB SNR), band (band-limited to 8-11 kHz sampling); each applied to an utterance with probability 1/2. Voices and rates stay those without it; dev and test are never augmented.", rich_help_panel=TTS)] = "",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N utterances (a quick try).")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(min=0.0, help="Skip clips longer than this, found from the audio's header before decoding; each one is named in OUT/skips.jsonl and counted in the report (default: 60 s, for every encoder: what the paper's SeamlessM4T encoder takes in fp32 on an 8 GB GPU).", rich_help_panel=ENCODING)] = None,
    batch_seconds: Annotated[float, typer.Option(min=1.0, help="Encoder batches: padded audio seconds per batch (clips are sorted by length first).", rich_help_panel=ENCODING)] = 240.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Encoder batches: most clips per batch.", rich_help_panel=ENCODING)] = 64,
    shard_size: Annotated[int, typer.Option(min=1, help="Utterances per shard, the unit of resuming.", rich_help_panel=ENCODING)] = 256,
    llm: Annotated[Optional[str], typer.Option(help="An LLM spec ('smollm2-135m', a .gguf, a folder, a hub id) whose tokenizer measures frames per token in the report: whether the mapper's 4x-downsampled output has room for each transcript.")] = None,
    config: Config = None,
):
    """Encode speech into a feature store for `smap pretrain`, `smap attach` and `smap evaluate`.

    Unusable items (unreadable, missing, empty, too long, untranscribed, a text too long, an encoder
    failure) are skipped and named, on screen and in OUT/skips.jsonl; the rest goes through, and the
    exit code is 0. OUT/prepare_report.json holds counts, hours, skips per reason, and frames per token
    with --llm. A second `prepare` on the same --out stops at once. Under `accelerate launch`, each
    process encodes its share.
    """
    from smap.data.corpus import CorpusConfig
    from smap.prepare import PrepareConfig, prepare as run

    encoder_options = {k: v for k, v in dict(layer=layer, window=window, device=device, dtype=dtype,
                                              compute_type=compute_type).items() if v is not None}
    source_options = {k: v for k, v in dict(data_dir=data_dir, audio_dir=audio_dir, audio_field=audio_field,
                                             text_field=text_field, pair=pair, lang=lang).items() if v is not None}
    if dataset == "librisqa":
        source_options["part"] = part
    if dataset == "tts":
        source_options["tts"] = CorpusConfig(seed=seed, train=tts_train, dev=tts_dev, test=tts_test,
                                             voices_per_sentence=voices_per_sentence,
                                             voices_per_question=voices_per_question, vocab=vocab or None,
                                             qa_vocab_voices=qa_vocab_voices,
                                             accents=tuple(a.strip() for a in accents.split(",") if a.strip()),
                                             augment=tuple(e.strip() for e in tts_augment.split(",") if e.strip()))
    cfg = PrepareConfig(source=dataset, out=str(out), split=split, encoder=encoder, encoder_options=encoder_options,
                        source_options=source_options, limit=limit, max_seconds=max_seconds,
                        batch_seconds=batch_seconds, batch_size=batch_size, shard_size=shard_size, llm=llm)
    report = run(cfg, console=console)
    if not report:  # not the main process of an `accelerate launch`
        return
    console.print(f"{report['stored']} utterances ({report['hours_stored']:.2f} h) in {literal(out)}: {report['encoded_now']} "
                  f"encoded now, {report['stored_before']} already there, {report['skipped']} skipped"
                  + (f" ({', '.join(f'{n} {r}' for r, n in report['skip_reasons'].items())})" if report["skipped"] else ""),
                  highlight=False, soft_wrap=True)
    fpt = report.get("frames_per_token")
    if fpt and fpt.get("utterances"):
        console.print(f"frames per token: mean {fpt['mean']}, min {fpt['min']}; after the mapper's {fpt['mapper_downsampling']}x "
                      f"downsampling {fpt['too_short_for_mapper']} utterances ({fpt['too_short_share']:.1%}) have fewer "
                      f"vectors than tokens ({fpt.get('too_short_with_pool2', '?')} with --pool 2)", highlight=False, soft_wrap=True)
    console.print(f"report: {literal(out / 'prepare_report.json')}" + (f", skipped items: {literal(report['skips'])}"
                                                                       if report["skipped"] else ""), highlight=False)


@app.command()
@friendly
def pretrain(
    train: Annotated[list[Path], typer.Option("--train", help="Feature store(s) for training (from `smap prepare`); repeat for several.")],
    llm: Annotated[str, typer.Option(help="LLM whose input embeddings are the targets: 'smollm2-135m' (embedded), a .gguf file, a checkpoint folder or a hub id org/name[@revision] (fetched once, then read from the Hugging Face cache; taken for one only where org/ is no local folder here, or written hf:org/name). Only its tokenizer and embedding matrix are loaded.")] = "smollm2-135m",
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, TensorBoard logs and the final mapper (out/mapper).")] = Path("runs/pretrain"),
    valid: Annotated[Optional[list[Path]], typer.Option("--valid", help="Feature store(s) for validation loss and nearest-embedding WER.")] = None,
    preset: Annotated[str, typer.Option(help="Mapper size: 'paper' (~277M, 1024->2048->4096), 'small' (CPU, ~12M), 'tiny' (tests).")] = "small",
    layers: Annotated[Optional[int], typer.Option(min=1, help="Transformer layers per block (overrides the preset; paper: 6).")] = None,
    dropout: Annotated[Optional[float], typer.Option(min=0.0, max=0.95, help="Dropout in the mapper's Transformer layers (default: the preset's, 0.1).")] = None,
    alpha: Annotated[float, typer.Option(min=0.0, help="Weight of content positions against pad positions in the MSE (paper: 5).")] = 5.0,
    pool: Annotated[int, typer.Option(min=1, help="Average-pool N input frames before the mapper: for a 50 Hz encoder such as Whisper, 2 halves the cost of Stage 1 and the speech vectors the LLM reads; `smap prepare` reports the utterances it would leave too short.", rich_help_panel=BEYOND)] = 1,
    compress: Annotated[str, typer.Option(help="'none' (the paper): block 2 downsamples by 2 again, and the targets are left-packed into a fixed-ratio output. 'ctc': a CTC head on block 1 (over the training transcripts' token types) cuts its frames into runs of one label, each run averaged into one vector, so the output has about one vector per token, in order, and its length depends on the speech; block 2 keeps the length.", rich_help_panel=BEYOND)] = "none",
    ctc_weight: Annotated[float, typer.Option(min=0.0, help="--compress ctc: weight of the CTC loss, in Stage 1 and whenever the mapper trains in attach.", rich_help_panel=BEYOND)] = 0.05,
    ctc_align: Annotated[bool, typer.Option("--ctc-align/--no-ctc-align", help="--compress ctc: in training, cut block 1's frames by the forced CTC alignment of the transcript (Viterbi) instead of the greedy labels, so that output k is trained towards token k and a misread word does not shift every later target. Inference cuts by the greedy labels either way.", rich_help_panel=BEYOND)] = False,
    max_cut_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Refuse to train when more than this share of the training utterances have more transcript tokens than the mapper outputs vectors (their targets would be cut): features too slow for the mapper's downsampling; `benchmarks/frames_per_token.py` measures an encoder's rate.")] = 0.05,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="Normalise each utterance's features to zero mean and unit variance per channel before the mapper (kept in the mapper: inference does the same), so that a voice's constant offset in the features is gone.", rich_help_panel=BEYOND)] = False,
    mask_time: Annotated[float, typer.Option(min=0.0, max=0.9, help="SpecAugment on the features while the mapper trains (Stage 1 and attach): about this share of each utterance's frames masked to zero, in 0.2 s spans (0: off).", rich_help_panel=BEYOND)] = 0.0,
    mask_channels: Annotated[float, typer.Option(min=0.0, max=0.9, help="SpecAugment: this share of each utterance's feature channels masked to zero while the mapper trains (0: off).", rich_help_panel=BEYOND)] = 0.0,
    ce_weight: Annotated[float, typer.Option(min=0.0, help="Add this weight x a cross-entropy at each content position over the tokens of the training transcripts, logits 20 x cosine(output, token embedding), so that outputs pick a token rather than the mean of the candidates (0: the paper's MSE alone).", rich_help_panel=BEYOND)] = 0.0,
    steps: Steps = 10000,
    lr: Lr = 1e-3,
    warmup: Annotated[int, typer.Option(min=0, help="Linear warm-up steps before the cosine decay (paper: 100K).", rich_help_panel=LOOP)] = 500,
    weight_decay: WeightDecay = 0.01,
    max_frames: TrainFrames = 12000,
    grad_accum: GradAccum = 1,
    clip: Clip = 1.0,
    mixed_precision: MixedPrecision = "auto",
    seed: Seed = 0,
    save_every: SaveEvery = 500,
    eval_every: EvalEvery = 500,
    log_every: LogEvery = 10,
    eval_at_start: EvalAtStart = False,
    keep: Keep = 2,
    resume: Resume = False,
    overwrite: Overwrite = False,
    time_budget: TimeBudget = None,
    workers: Workers = 0,
    config: Config = None,
):
    """Stage 1: train a SpeechMapper to map speech features onto the LLM's input embeddings, without the LLM.

    Loads only the LLM's tokenizer and embedding matrix, so a 9B LLM costs its embedding (~1 GB), not 18 GB.
    Run under `accelerate launch` for several GPUs; the same command works on one CPU.
    """
    from smap.pretrain import PretrainConfig, pretrain as run

    cfg = PretrainConfig(
        train=[str(p) for p in train], valid=[str(p) for p in valid or []], llm=llm, out=str(out),
        preset=preset, layers=layers, dropout=dropout, normalize=normalize, mask_time=mask_time,
        mask_channels=mask_channels, pool=pool, compress=compress, ctc_weight=ctc_weight, ctc_align=ctc_align,
        steps=steps, lr=lr, warmup=warmup, weight_decay=weight_decay, max_frames=max_frames, grad_accum=grad_accum,
        clip=clip, alpha=alpha, ce_weight=ce_weight, max_cut_share=max_cut_share, mixed_precision=mixed_precision, seed=seed,
        save_every=save_every, eval_every=eval_every, log_every=log_every, eval_at_start=eval_at_start, keep=keep,
        resume=resume, overwrite=overwrite, time_budget=time_budget, workers=workers,
    )
    run(cfg)


@app.command()
@friendly
def attach(
    mapper: Annotated[Path, typer.Option(help="Stage-1 mapper: its folder, or the `smap pretrain` run folder holding mapper/.")],
    train: Annotated[list[Path], typer.Option("--train", help="Training feature store(s); repeat for several. --mode asr: stores with transcripts; --mode task: ST stores (translation, tgt_lang) or SQA stores (answer, and a text question; without one the speech is the question, as in tts/train-qa).")],
    mode: Annotated[str, typer.Option(help="'asr': ASR examples only (task-agnostic); 'task': the target task's examples with ASR batches mixed in (--asr-mix).")] = "asr",
    llm: Annotated[Optional[str], typer.Option(help="Frozen LLM: 'smollm2-135m' (embedded), a .gguf file, a checkpoint folder or a hub id org/name[@revision] (fetched once, then read from the Hugging Face cache; taken for one only where org/ is no local folder here, or written hf:org/name). Default: the LLM the mapper was pretrained for; another one must share its embedding size and tokenizer. The model folder records it so that it travels: a path inside --out relative to it, another path absolute, a hub id with its commit.")] = None,
    out: Annotated[Path, typer.Option(help="Run folder, and the model folder for `smap infer --model` (smap_model.json + mapper/).")] = Path("runs/attach"),
    valid: Annotated[Optional[list[Path]], typer.Option("--valid", help="Feature store(s) for held-out CE and a few decoded examples (printed and in samples.jsonl).")] = None,
    asr_train: Annotated[Optional[list[Path]], typer.Option("--asr-train", help="--mode task: ASR stores for the mixed-in batches (default: the --train stores' transcripts).")] = None,
    asr_mix: Annotated[float, typer.Option(min=0.0, max=0.99, help="--mode task: probability that a batch is an ASR batch (paper: 0.5 for SQA).")] = 0.5,
    mse_weight: Annotated[float, typer.Option(min=0.0, help="sigma in CE + sigma x Stage-1 MSE towards the transcript's token embeddings (0: CE only).")] = 0.0,
    alpha: Annotated[float, typer.Option(min=0.0, help="Weight of content against pad positions in that MSE, as in Stage 1.")] = 5.0,
    system: Annotated[str, typer.Option(help="System message: 'default' (the chat template's own), 'short' (one line, cheaper on a CPU) or any text. Recorded in the model folder.")] = "default",
    layout: Annotated[str, typer.Option(help="The user turn: 'quoted' (the instruction, then the speech, in double quotes for ASR, so that a small chat LLM repeats rather than answers), 'instruction-first' (the same, never quoted) or 'speech-first'. Recorded in the model folder.", rich_help_panel=BEYOND)] = DEFAULT_LAYOUT,
    token_mix: Annotated[float, typer.Option(min=0.0, help="The LLM reads each speech vector as a mixture of token embeddings, softmax(TOKEN_MIX x cosine) over the CTC head's token types (or the whole vocabulary) and the pad, up to the first vector nearest the pad; 0: the vectors themselves (the paper). 100 is almost the nearest token; train it with a low --lr. Recorded in the model folder.", rich_help_panel=BEYOND)] = 0.0,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps (paper: about 1000).", rich_help_panel=LOOP)] = 1000,
    lr: Lr = 1e-4,
    warmup: Warmup = 50,
    weight_decay: WeightDecay = 0.01,
    max_frames: TrainFrames = 4000,
    grad_accum: GradAccum = 1,
    clip: Clip = 1.0,
    mixed_precision: MixedPrecision = "auto",
    seed: Seed = 0,
    save_every: SaveEvery = 250,
    eval_every: EvalEvery = 250,
    log_every: LogEvery = 10,
    max_valid: Annotated[int, typer.Option(min=1, help="Validation utterances in the held-out CE.", rich_help_panel=LOOP)] = 64,
    valid_decode: Annotated[int, typer.Option(min=0, help="Validation utterances decoded greedily at each validation for the held-out WER (ASR ones; 0: CE only).", rich_help_panel=LOOP)] = 32,
    show: Annotated[int, typer.Option(min=0, help="Validation examples decoded and shown at each validation.", rich_help_panel=LOOP)] = 3,
    eval_at_start: EvalAtStart = False,
    keep: Keep = 2,
    resume: Resume = False,
    overwrite: Overwrite = False,
    time_budget: TimeBudget = None,
    workers: Workers = 0,
    config: Config = None,
):
    """Stage 2: attach a pretrained mapper to a frozen LLM; only the mapper is trained.

    The mapper's output takes the place of a placeholder in the LLM's chat-template prompt and the
    loss is the cross-entropy of the response tokens. Run under `accelerate launch` for several GPUs.
    """
    from smap.attach import AttachConfig, attach as run

    cfg = AttachConfig(
        mapper=str(mapper), llm=llm, mode=mode, train=[str(p) for p in train], valid=[str(p) for p in valid or []],
        asr_train=[str(p) for p in asr_train or []], asr_mix=asr_mix, mse_weight=mse_weight, alpha=alpha,
        system=system, layout=layout, token_mix=token_mix, out=str(out), steps=steps, lr=lr, warmup=warmup,
        weight_decay=weight_decay, max_frames=max_frames, grad_accum=grad_accum, clip=clip,
        mixed_precision=mixed_precision, seed=seed, save_every=save_every, eval_every=eval_every, log_every=log_every,
        max_valid=max_valid, valid_decode=valid_decode, show=show, keep=keep, resume=resume, overwrite=overwrite,
        time_budget=time_budget, eval_at_start=eval_at_start, workers=workers,
    )
    run(cfg)


@app.command()
@friendly
def infer(
    audio: Annotated[Optional[list[Path]], typer.Argument(help="Audio files (any format soundfile reads), encoded on the fly with the model's encoder.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help="Model folder from `smap attach` (needs nothing else; moved or copied, it still works), or its hub id org/name[@revision] (fetched once, then read from the Hugging Face cache; taken for one only where org/ is no local folder here, or written hf:org/name).")] = None,
    mapper: Annotated[Optional[Path], typer.Option(help="Instead of --model: a Stage-1 mapper folder (or pretrain run folder), used zero-shot with --llm.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="With --mapper: the frozen LLM spec ('smollm2-135m', a .gguf, a folder or a hub id org/name[@revision] (fetched once, then read from the Hugging Face cache; taken for one only where org/ is no local folder here, or written hf:org/name); default: the one the mapper was pretrained for). With --model: where the LLM its folder names is now (a folder copied to another machine).")] = None,
    system: Annotated[str, typer.Option(help="With --mapper: system message, 'default', 'short' or any text (a model folder records its own).")] = "default",
    layout: Annotated[str, typer.Option(help="With --mapper: 'quoted', 'instruction-first' or 'speech-first', the user turn's layout (`smap attach --layout`; a model folder records its own).", rich_help_panel=BEYOND)] = DEFAULT_LAYOUT,
    token_mix: Annotated[float, typer.Option(min=0.0, help="With --mapper: the LLM reads token mixtures of this sharpness (`smap attach --token-mix`; 0: the vectors; a model folder records its own).", rich_help_panel=BEYOND)] = 0.0,
    store: Annotated[Optional[Path], typer.Option(help="Instead of audio files: a prepared feature store (from `smap prepare`).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="With --store: only the first N utterances.")] = None,
    task: Annotated[str, typer.Option(help=f"'asr', 'st' (needs --tgt-lang or tgt_lang in the store), 'sqa' (needs --question or question in the store; a store record with neither is a spoken question, asked --prompt or {SPOKEN_QUESTION!r}) or 'free' (needs --prompt).")] = "asr",
    tgt_lang: Annotated[Optional[str], typer.Option(help="ST target language, a code (de) or a name (German).")] = None,
    question: Annotated[Optional[str], typer.Option(help="SQA: the question, as text beside the spoken passage.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="--task free: the instruction itself; --task sqa on a spoken question: its instruction.")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="With audio files: override the model's encoder spec.")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(min=0.0, help="With audio files: refuse a file longer than this, found from its header before decoding (default: 60 s, as `smap prepare --max-seconds`).")] = None,
    num_beams: NumBeams = 1,
    max_new_tokens: MaxNewTokens = 128,
    asr_cap: AsrCap = True,
    asr_slack: AsrSlack = 1,
    first_line: FirstLine = True,
    no_repeat_ngram: NoRepeatNgram = 0,
    max_frames: DecodeFrames = 4000,
    out: Annotated[Optional[Path], typer.Option(help="JSONL file for the rows (id, task, prompt, output); written whole at the end.")] = None,
    device: Annotated[Optional[str], typer.Option(help="'cpu', 'cuda', ... (default: cuda if available).")] = None,
    mixed_precision: LoadPrecision = "auto",
    config: Config = None,
):
    """Run a speech LLM on audio files or a feature store; print one line per input, optionally write JSONL."""
    from smap.data.store import FeatureStore
    from smap.generate import generate_audio, generate_store, load_model, write_jsonl
    from smap.progress import progress
    from smap.prompts import check_layout
    from smap.speech_llm import Decoding

    if bool(audio) == (store is not None):
        raise UserError("give audio files or --store, not both and not neither")
    check_layout(layout)
    features = FeatureStore(store) if store is not None else None  # a bad store is named before the model loads
    chosen = _precision(mixed_precision, device)
    speech_llm = load_model(model, mapper, llm, system, device, layout, token_mix, chosen.dtype)
    console.print(f"precision: {chosen}", highlight=False)
    kwargs = dict(task=task, tgt_lang=tgt_lang, question=question, prompt=prompt, max_frames=max_frames,
                  decoding=Decoding(max_new_tokens, num_beams, no_repeat_ngram, asr_slack if asr_cap else None, first_line))
    total = len(features.records[:limit]) if features is not None else len(audio)
    with progress(console, "infer", total, "utterances") as update:
        kwargs["advance"] = update
        rows = (generate_store(speech_llm, features, limit=limit, **kwargs) if features is not None
                else generate_audio(speech_llm, audio, encoder=encoder, max_seconds=max_seconds, **kwargs))
    for row in rows:
        typer.echo(f"{printable(row['id'])}\t{printable(row['output'])}")
    if out is not None:
        write_jsonl(rows, out)
        console.print(f"{len(rows)} rows written to {literal(out)}")


@app.command()
@friendly
def evaluate(
    suite: Annotated[str, typer.Option(help="Comma list of suites, or suite/split: europarl (en-fr, en-de, en-es, en-it), covost2 (en-de, en-zh), librisqa (part1, part2), librispeech (test-clean, test-other), fleurs (en), spokensquad (test), tts (test, everyday, test-qa: the embedded default's synthetic speech). E.g. 'europarl,covost2,librisqa' or 'librispeech/test-clean'. Or the path of your own feature store folder (from `smap prepare --dataset my.jsonl`), e.g. 'librispeech/test-clean,data/mine/test': read where it is, reported as its last two path parts, its task from its records (translation: ST; question and answer: SQA; else ASR).", show_default=False)],
    systems: Annotated[Optional[str], typer.Option(help="Comma list of systems: 'smap' (the speech LLM: --model or --mapper; the default), 'nearest' (each --model / --mapper's speech vectors read without the LLM, as their nearest token embeddings: what Stage 1 alone transcribes; rows NAME-nearest), 'transcript' (the gold transcript given to the same LLM as text: topline), 'cascade' (an ASR's transcript given to the LLM: --asr). With --rescore: which of the saved systems (default: all).", show_default=False)] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Model folder from `smap attach`, or its hub id org/name[@revision] (as `smap infer --model`); its LLM also serves transcript and cascade. Repeat as NAME=DIR to compare several speech models in one table.")] = None,
    mapper: Annotated[Optional[list[str]], typer.Option("--mapper", help="A Stage-1 mapper folder (or pretrain run folder), evaluated zero-shot with --llm. Repeatable, NAME=DIR, like --model.")] = None,
    llm: Annotated[Optional[str], typer.Option(help="LLM spec ('smollm2-135m', a .gguf, a folder, a hub id org/name[@revision] (fetched once, then read from the Hugging Face cache; taken for one only where org/ is no local folder here, or written hf:org/name)): for --mapper (default: the one it was pretrained for), and for transcript/cascade without --model.")] = None,
    token_mix: Annotated[float, typer.Option(min=0.0, help="For --mapper: the LLM reads token mixtures of this sharpness (`smap attach --token-mix`; 0: the vectors, the paper's Stage 1 only). A --model folder records its own.", rich_help_panel=BEYOND)] = 0.0,
    mapper_system: Annotated[str, typer.Option(help="For --mapper: the system message, 'default', 'short' or any text; give the one the attached models were trained with (`smap attach --system`) to compare Stage 1 only with them. A --model folder records its own.")] = "default",
    asr: Annotated[Optional[str], typer.Option(help="Cascade's ASR: a smap model folder (ASR on the same features), or a CTranslate2 Whisper ('whisper-tiny.en', 'ct2:DIR') decoding its own encoder's features: those under --asr-data-root if given, else the split's store.")] = None,
    asr_data_root: Annotated[Optional[Path], typer.Option(help="For a Whisper --asr: stores laid out like --data-root, prepared with its encoder in the 30 s window (`smap prepare --encoder whisper-tiny.en --window`); Whisper loses words on features cut to the clip.")] = None,
    data_root: Annotated[Path, typer.Option(help="Where the prepared feature stores are: one per split, in the folder SUITE/SPLIT under it (e.g. europarl/en-fr), as `smap prepare` writes it; a symlink is fine. A missing one is named with the `smap prepare` command that makes it, and skipped.")] = Path("data"),
    out: Annotated[Path, typer.Option(help="Report folder: results.json, results.md, results.png, and what each system said under outputs/ (one JSONL per split and system).")] = Path("runs/evaluate"),
    judge: Annotated[Optional[list[str]], typer.Option("--judge", help="Judge LLM spec for spoken-QA accuracy; repeat for several (averaged, as the paper's four). Each is loaded only once every system has generated, one at a time, and freed before the next. Without one, judged accuracy is left out and librisqa/part1 is skipped.", rich_help_panel=SCORING)] = None,
    comet_model: Annotated[Optional[str], typer.Option(help="COMET for ST: a folder (with checkpoints/model.ckpt), a .ckpt file, a hub id, or 'none'. Default: Unbabel/wmt22-comet-da if it is in the local Hugging Face cache, else COMET is left out (noted). Needs the optional unbabel-comet.", rich_help_panel=SCORING)] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N utterances of each split (quick checks).")] = None,
    num_beams: NumBeams = 1,
    max_new_tokens: MaxNewTokens = 128,
    asr_cap: AsrCap = True,
    asr_slack: AsrSlack = 1,
    first_line: FirstLine = True,
    no_repeat_ngram: NoRepeatNgram = 0,
    max_frames: DecodeFrames = 4000,
    batch_size: Annotated[int, typer.Option(min=1, help="Text batches (transcript, cascade, judges): prompts per batch.", rich_help_panel=DECODING)] = 16,
    mixed_precision: LoadPrecision = "auto",
    rescore: Annotated[Optional[Path], typer.Option(help="Score again what the systems said in an earlier evaluation, from that --out folder (its results.json and outputs/), instead of running them: no model is loaded and nothing is decoded. The stores under --data-root give the references; --limit must be the earlier run's. For a fixed scorer, or a COMET model or --judge added later. --out may be the same folder.", show_default=False, rich_help_panel=SCORING)] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Decode every system again. Without it, a system whose outputs on a split are already under --out, made by the same system (its options, decoding and, for a speech model, its weights' sha256) from the same store, is not run again: a stopped evaluation resumes, and a model added to an earlier command is the only one decoded. Its time in the table is the earlier run's.")] = False,
    config: Config = None,
):
    """Score systems on the paper's suites: WER (ASR); COMET, BLEU, chrF and target-language adherence (ST); judged, exact-choice or exact-match accuracy (SQA).

    Writes the report under --out and prints the paper-style table. Exit code 1 if a suite could not run (each is named with what to do), 2 for bad options.
    Run under `accelerate launch` for several GPUs: each process decodes its share of every split, the main one scores.
    """
    from rich.console import Console as _Console

    from smap.evaluate import report, run, suites
    from smap.evaluate import systems as specs
    from smap.speech_llm import Decoding

    splits = suites.select(suite)
    chosen_precision = _precision(mixed_precision)
    inference = specs.Inference(Decoding(max_new_tokens, num_beams, no_repeat_ngram, asr_slack if asr_cap else None, first_line),
                                max_frames, batch_size, chosen_precision.mixed_precision)
    names = [s.strip() for s in (systems or "").split(",") if s.strip()]
    state = run.processes()  # before any model loads: under `accelerate launch`, each process's on its own GPU
    if rescore:
        given = [f"--{o}" for o, v in (("model", model), ("mapper", mapper), ("llm", llm), ("asr", asr)) if v]
        if given:
            raise UserError(f"--rescore scores saved outputs: {', '.join(given)} would not be used")
        chosen = specs.saved(rescore, names)
        tested = {s.name: s.describe().get("llm") for s in chosen}
    else:
        tested = specs.tested_llms(names or ["smap"], model or [], mapper or [], llm)
    judges = specs.judges(judge or [], batch_size, tested, inference.dtype)  # checked now, loaded after generating
    if not rescore:
        chosen = specs.build(names or ["smap"], models=model or [], mappers=mapper or [], llm=llm, token_mix=token_mix,
                             mapper_system=mapper_system, asr=asr, asr_data_root=asr_data_root, inference=inference)
        if state.is_main_process:
            console.print(f"precision: {chosen_precision}", highlight=False)
    # the main process alone scores: only it loads COMET
    scoring = run.make_scoring(splits, comet_model, judges) if state.is_main_process else None
    results = run.evaluate(splits, chosen, data_root, out, scoring, limit,
                           log=lambda line: console.print(printable(line), markup=False, highlight=False, soft_wrap=True),
                           console=console, resume=not (fresh or rescore))
    if results is None:  # another process than the main one: its share is with the main one
        return
    _Console().print(report.rich_table(results))
    for p in results.problems:
        console.print(f"[{'red' if p.failed else 'yellow'}]not run:[/] {literal(p.message)}", highlight=False, soft_wrap=True)
    console.print("report: " + literal(", ".join(str(p) for p in results.files.values())), highlight=False)
    if results.failed:
        raise typer.Exit(1)



def main() -> None:  # pragma: no cover - console-script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
