"""The evaluation report: results.json (every figure, with model, data and package versions),
results.md (a table like the paper's, then every figure), results.png (systems compared per
suite), outputs/<suite>/<split>/<system>.jsonl (what each system said), and a rich table for
the screen. Every file is written to a temporary name and renamed: complete or absent.
"""

from __future__ import annotations

import hashlib
import json
from math import nan
from pathlib import Path
from typing import TYPE_CHECKING

from smap.fileio import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from rich.table import Table

    from smap.evaluate.run import Results
    from smap.evaluate.suites import Split

# Score keys as the tables show them; WER is the one where lower is better.
LABELS = {
    "wer": "WER", "comet": "COMET", "bleu": "BLEU", "chrf": "chrF", "lang_target": "in target lang %",
    "lang_en": "in English %", "judged": "judged acc.", "exact_choice": "exact choice", "exact_match": "exact match",
    "answer_in_output": "answer in output (all)", "topline_answered": "acc. where topline right",
}
LOWER_IS_BETTER = {"wer"}
PAPER_ROW = "SpeechMapper (paper)"
# Shown beside a split's main metric in the paper-style table: the accuracy on the questions the
# topline answers is read against the accuracy on all of them.
BESIDE = {"topline_answered": "answer_in_output"}


def label(key: str) -> str:
    if key.startswith("judged["):
        return f"judge {key[7:-1]}"
    return LABELS.get(key, key)


def headline(split: Split, results: Results) -> str | None:
    """The split's main metric: the first of its metrics that some system was scored on."""
    scored = {k for e in results.entries if e.split == split for k in e.scores}
    return next((m for m in split.metrics if m in scored), None)


def _columns(results: Results) -> list[tuple[Split, str]]:
    """(split, metric) per column of the paper-style table: each split's main metric, and the one
    shown beside it (`BESIDE`) where that was scored."""
    seen: list[Split] = []
    for e in results.entries:
        if e.split not in seen:
            seen.append(e.split)
    cols = []
    for s in seen:
        if m := headline(s, results):
            scored = any(BESIDE.get(m) in e.scores for e in results.entries if e.split == s)
            cols += [(s, m)] + ([(s, BESIDE[m])] if scored else [])
    return cols


def additions(described: dict) -> list[str]:
    """smap's additions to the paper's prompt and decoding that a system ran with, from its
    `describe()`: the quoted layout, the ASR output cap, the first-line cut of ASR outputs. None
    for a system without the LLM's prompt (nearest tokens, the SFM). Reports from before the
    first-line cut could be switched off always cut."""
    if "layout" not in described:
        return []
    decoding = described.get("inference", {}).get("decoding", {})
    found = ["+quoted"] if described["layout"] == "quoted" else []
    if decoding.get("asr_slack") is not None:
        found.append(f"asr cap {decoding['asr_slack']}")
    if decoding.get("first_line", True):
        found.append("first-line cut")
    return found


def row_label(results: Results, system: str) -> str:
    """A system's row in the paper-style table: its name, and smap's additions it ran with
    (`additions`), e.g. "smap (+quoted, asr cap 1, first-line cut)"."""
    found = additions(results.meta.get("systems", {}).get(system, {}))
    return f"{system} ({', '.join(found)})" if found else system


def _systems(results: Results) -> list[str]:
    return list(dict.fromkeys(e.system for e in results.entries))


def _cell(results: Results, split: Split, system: str, metric: str) -> str:
    e = next((e for e in results.entries if e.split == split and e.system == system), None)
    return f"{e.scores[metric]:.1f}" if e and metric in e.scores else "-"


def skipped_line(skips: dict) -> str:
    """'N of M utterances skipped' by `smap prepare`, why, and where they are listed (from
    `run.prepare_skips`)."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in skips["reasons"].items())
    return (f"{skips['skipped']} of {skips['items']} utterances skipped by smap prepare ({reasons}); "
            f"not evaluated, listed in {skips['list']}")


def _skipped(results: Results) -> dict[str, dict]:
    """Split key -> what `smap prepare` skipped of it, for the splits where it skipped any."""
    return {key: d["prepare_skipped"] for key, d in results.meta.get("data", {}).items()
            if (d.get("prepare_skipped") or {}).get("skipped")}


def main_table(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper-style table: systems x splits, each split's main metric; a
    split that `smap prepare` left utterances out of says how many in its header."""
    cols, skipped = _columns(results), _skipped(results)

    def head(split: Split, metric: str) -> str:
        skips = skipped.get(split.key)
        return (f"{split.key} {label(metric)}{'↓' if metric in LOWER_IS_BETTER else ''}"
                + (f" ({skips['skipped']} of {skips['items']} utterances skipped)" if skips else ""))

    header = ["system"] + [head(s, m) for s, m in cols]
    rows = [[row_label(results, name)] + [_cell(results, s, name, m) for s, m in cols] for name in _systems(results)]
    if any(m in s.paper for s, m in cols):
        rows.append([PAPER_ROW] + [f"{s.paper[m]:.1f}" if m in s.paper else "-" for s, m in cols])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(results: Results) -> str:
    meta = results.meta
    parts = [f"# smap evaluate\n\n{meta['finished']} · smap {meta['packages'].get('smap', '?')} · "
             f"data root `{meta['data_root']}`\n"]
    if results.entries:
        parts.append("## Main figures\n\n" + _md_table(*main_table(results)) + "\n")
        if skipped := _skipped(results):
            parts.append("Utterances the evaluation could not include:\n\n"
                         + "\n".join(f"- {key}: {skipped_line(d)}" for key, d in skipped.items()) + "\n")
        keys = list(dict.fromkeys(k for e in results.entries for k in e.scores))
        rows = [[e.split.key, e.system, str(e.n)] + [f"{e.scores[k]:.1f}" if k in e.scores else "-" for k in keys]
                + [f"{e.seconds:.1f}"] for e in results.entries]
        parts.append("## All figures\n\n"
                     + _md_table(["split", "system", "n"] + [label(k) for k in keys] + ["seconds"], rows) + "\n")
        notes = [f"- {e.split.key} x {e.system}: {n}" for e in results.entries for n in e.notes]
        if notes:
            parts.append("## Notes\n\n" + "\n".join(notes) + "\n")
    if results.problems:
        parts.append("## Not run\n\n" + "\n".join(
            f"- {'' if p.failed else '(optional) '}{p.key}{' x ' + p.system if p.system else ''}: {p.message}"
            for p in results.problems) + "\n")
    systems = "\n".join(f"- {name}: {json.dumps(d)}" for name, d in meta["systems"].items())
    packages = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    parts.append(f"## Versions\n\n{systems}\n- packages: {packages}; Python {meta['python']}\n"
                 f"- scoring: {json.dumps(meta['scoring'])}\n")
    return "\n".join(parts)


def to_json(results: Results) -> dict:
    return {
        **results.meta,
        "results": [{"suite": e.split.suite, "split": e.split.name, "task": e.split.task, "system": e.system,
                     "n": e.n, "scores": e.scores, "notes": e.notes, "seconds": round(e.seconds, 3),
                     "paper": e.split.paper} for e in results.entries],
        "problems": [{"split": p.key, "system": p.system, "message": p.message, "failed": p.failed,
                      "detail": p.detail} for p in results.problems],
        "failed": results.failed,
    }


def rich_table(results: Results) -> Table:
    """The main table for a console; every cell is plain text (`rich.text.Text`), never markup: a
    split named by a store path holding '[/x]' is shown as written, not read as a closing tag."""
    from rich.table import Table
    from rich.text import Text

    header, rows = main_table(results)
    table = Table(title="smap evaluate")
    for name in header:
        table.add_column(Text(name))
    for row in rows:
        table.add_row(*map(Text, row), style="dim" if row[0] == PAPER_ROW else None)
    skipped = _skipped(results)
    if skipped:
        table.caption = Text("\n".join(f"{key}: {skipped_line(d)}" for key, d in skipped.items()))
    return table


def chart(results: Results, path: Path) -> None:
    """Grouped bars: one panel per suite, one group per split, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(results)
    suites = list(dict.fromkeys(s.suite for s, _ in cols))
    systems = _systems(results)
    fig, axes = plt.subplots(1, len(suites), figsize=(max(4.0, 3.2 * len(suites)), 3.8), squeeze=False)
    width = 0.8 / len(systems)
    for ax, suite in zip(axes[0], suites):
        here = [(s, m) for s, m in cols if s.suite == suite]
        for k, name in enumerate(systems):
            # NaN draws no bar: a system not scored on a split must not look like a WER of 0.
            values = [next((e.scores.get(m, nan) for e in results.entries if e.split == s and e.system == name), nan)
                      for s, m in here]
            bars = ax.bar([i + k * width for i in range(len(here))], values, width, label=row_label(results, name))
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xlim(-0.6 * width - 0.1, len(here) - 1 + width * (len(systems) - 0.4) + 0.1)  # room for unscored bars
        ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(here))])
        ax.set_xticklabels([f"{s.name}\n{label(m)}{' (lower is better)' if m in LOWER_IS_BETTER else ''}"
                            for s, m in here], fontsize=8)
        ax.set_title(suite)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def outputs_path(out: str | Path, split: Split, system: str) -> Path:
    return Path(out) / "outputs" / split.suite / split.name / f"{system}.jsonl"


def write_outputs(out: Path, split: Split, system: str, records: list[dict], hyps: list[str],
                  made_by: dict | None = None, seconds: float | None = None) -> Path:
    """outputs/<suite>/<split>/<system>.jsonl: id, reference fields and the output, one line each;
    with `made_by` (what made them: `saved_outputs` compares it), also <system>.json, which holds
    it, the `seconds` making them took and the outputs' sha256, written second so that it never
    vouches for other outputs."""
    path = outputs_path(out, split, system)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("id",) + split.needs
    text = "".join(json.dumps({**{k: r.get(k) for k in keep}, "output": h}, ensure_ascii=False) + "\n"
                   for r, h in zip(records, hyps))
    atomic_write_text(path, text)
    if made_by is not None:
        atomic_write_text(path.with_suffix(".json"), json.dumps(
            {"made_by": made_by, "seconds": seconds, "outputs_sha256": _sha256(text)},
            indent=1, ensure_ascii=False, default=str) + "\n")
    return path


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def saved_outputs(out: Path, split: Split, system: str, made_by: dict,
                  ids: list[str]) -> tuple[list[str], float] | None:
    """(outputs, seconds) that `write_outputs` wrote under `out` for `system` on `split`, if the same
    `made_by` (compared as JSON) made them for these record `ids`, in order; else None. A stopped
    evaluation resumes with them."""
    path = outputs_path(out, split, system)
    try:
        text = path.read_text(encoding="utf-8")
        saved = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        rows = read_outputs(path, text)
    except (OSError, ValueError):  # absent, unreadable or damaged: made again
        return None
    same = (isinstance(saved, dict) and saved.get("made_by") == json.loads(json.dumps(made_by, default=str))
            and saved.get("outputs_sha256") == _sha256(text))
    if not same or [r["id"] for r in rows] != ids:
        return None
    return [r["output"] for r in rows], float(saved.get("seconds") or 0.0)


def read_outputs(path: Path, text: str | None = None) -> list[dict]:
    """The rows `write_outputs` wrote (`text`: the file's, if already read); a line that is not one
    names the file and line."""
    rows = []
    text = path.read_text(encoding="utf-8") if text is None else text
    for n, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("output"), str) or "id" not in row:
            raise ValueError(f"{path}:{n}: not an output row (an object with 'id' and a string 'output')")
        rows.append(row)
    return rows


def write(results: Results, out: str | Path) -> dict[str, Path]:
    """results.json, results.md and (when anything was scored) results.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "results.json", "md": out / "results.md"}
    atomic_write_text(written["json"], json.dumps(to_json(results), indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(written["md"], markdown(results))
    png = out / "results.png"
    if _columns(results):
        chart(results, png)
        written["png"] = png
    else:  # a chart from an earlier run would pass for this one's
        png.unlink(missing_ok=True)
    return written
