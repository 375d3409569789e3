"""The report: the paper-style table, results.json / .md / .png, written whole."""

import json

from rich.console import Console

from smap.evaluate import report
from smap.evaluate.run import Entry, Problem, Results
from smap.evaluate.suites import select

CLEAN, = select("librispeech/test-clean")
EN_DE, = select("europarl/en-de")
PART1, = select("librisqa/part1")
META = {"finished": "2026-11-25T00:00:00+00:00", "data_root": "data", "systems": {"smap": {"model": "m"},
        "transcript": {"llm": "l"}}, "packages": {"smap": "0.1.0", "jiwer": "4.0.0"}, "python": "3.11",
        "scoring": {"comet": None}}


def results(entries=None, problems=()):
    entries = entries if entries is not None else [
        Entry(CLEAN, "smap", 10, {"wer": 12.345}, [], 1.0),
        Entry(CLEAN, "transcript", 10, {"wer": 1.0}, [], 0.5),
        Entry(EN_DE, "smap", 5, {"bleu": 20.0, "chrf": 50.0, "lang_target": 80.0, "lang_en": 20.0},
              ["COMET not computed: no COMET model (--comet-model)"], 2.0),
    ]
    return Results(entries, list(problems), META)


def test_main_table_is_systems_by_splits_with_each_splits_main_metric_and_the_paper_row():
    header, rows = report.main_table(results())
    # WER for ASR; BLEU stands in for COMET when COMET was not computed.
    assert header == ["system", "librispeech/test-clean WER↓", "europarl/en-de BLEU"]
    assert rows == [["smap", "12.3", "20.0"], ["transcript", "1.0", "-"], [report.PAPER_ROW, "2.9", "-"]]


def test_headline_prefers_comet_when_computed():
    r = results([Entry(EN_DE, "smap", 5, {"comet": 81.0, "bleu": 20.0}, [], 1.0)])
    header, rows = report.main_table(r)
    assert header[1] == "europarl/en-de COMET" and rows == [["smap", "81.0"], [report.PAPER_ROW, "82.2"]]


def test_write_makes_the_three_files_and_leaves_no_temporaries(tmp_path):
    problem = Problem("fleurs/en", None, "fleurs/en: no feature store at x; run: smap prepare ...")
    written = report.write(results(problems=[problem]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md", "results.png"]
    assert set(written) == {"json", "md", "png"}

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["failed"] is True and data["packages"]["jiwer"] == "4.0.0" and data["systems"]["smap"] == {"model": "m"}
    first = data["results"][0]
    assert (first["suite"], first["split"], first["system"], first["n"]) == ("librispeech", "test-clean", "smap", 10)
    assert first["scores"] == {"wer": 12.345} and first["paper"] == {"wer": 2.9}
    assert data["problems"][0]["message"].startswith("fleurs/en: no feature store")

    md = (tmp_path / "results.md").read_text()
    assert "| system | librispeech/test-clean WER↓ | europarl/en-de BLEU |" in md
    assert "| smap | 12.3 | 20.0 |" in md
    assert "- europarl/en-de x smap: COMET not computed" in md
    assert "## Not run\n\n- fleurs/en: fleurs/en: no feature store" in md
    assert "jiwer 4.0.0" in md

    png = (tmp_path / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_nothing_scored_gives_json_and_md_and_removes_an_old_chart(tmp_path):
    (tmp_path / "results.png").write_bytes(b"old")
    written = report.write(results(entries=[], problems=[Problem("tts/test", None, "missing")]), tmp_path)
    assert set(written) == {"json", "md"} and not (tmp_path / "results.png").exists()
    assert json.loads((tmp_path / "results.json").read_text())["results"] == []


def test_optional_problem_does_not_fail_the_run():
    r = results(problems=[Problem("librisqa/part2", None, "missing", failed=False)])
    assert not r.failed and "(optional) librisqa/part2" in report.markdown(r)


def test_rich_table_shows_every_system_and_figure():
    console = Console(record=True, width=200)
    console.print(report.rich_table(results()))
    text = console.export_text()
    for needle in ("smap", "transcript", report.PAPER_ROW, "12.3", "20.0", "2.9"):
        assert needle in text


def test_judges_get_their_own_columns():
    r = results([Entry(PART1, "smap", 4, {"judged": 50.0, "judged[a]": 75.0, "judged[b]": 25.0}, [], 1.0)])
    md = report.markdown(r)
    assert "| split | system | n | judged acc. | judge a | judge b | seconds |" in md


def test_write_outputs_keeps_ids_references_and_outputs(tmp_path):
    records = [{"id": "u1", "text": "hello", "translation": "hallo", "frames": 9}]
    path = report.write_outputs(tmp_path, EN_DE, "smap", records, ["hallo welt"])
    assert path == tmp_path / "outputs" / "europarl" / "en-de" / "smap.jsonl"
    assert json.loads(path.read_text()) == {"id": "u1", "text": "hello", "translation": "hallo", "output": "hallo welt"}


def test_rows_say_which_of_smaps_additions_a_system_ran_with():
    decoding = {"max_new_tokens": 128, "num_beams": 1, "no_repeat_ngram": 0}
    meta = {**META, "systems": {
        "smap": {"layout": "quoted", "inference": {"decoding": {**decoding, "asr_slack": 1, "first_line": True}}},
        "transcript": {"layout": "instruction-first",
                       "inference": {"decoding": {**decoding, "asr_slack": None, "first_line": False}}},
        "smap-nearest": {"input": "nearest tokens, no LLM"}}}
    r = Results([Entry(CLEAN, name, 10, {"wer": 1.0}, [], 1.0) for name in meta["systems"]], [], meta)
    _, rows = report.main_table(r)
    # the paper's plain prompt and decoding: the bare name
    assert [row[0] for row in rows[:3]] == ["smap (+quoted, asr cap 1, first-line cut)", "transcript", "smap-nearest"]
    # a report from before the cut could be switched off: it always cut
    old = Results(r.entries[:1], [], {**META, "systems": {"smap": {"layout": "instruction-first",
                                                                   "inference": {"decoding": {"asr_slack": 2}}}}})
    assert report.main_table(old)[1][0][0] == "smap (asr cap 2, first-line cut)"


def test_accuracy_where_the_topline_answers_is_shown_beside_the_accuracy_on_all_questions():
    qa, = select("tts/test-qa")
    r = results([Entry(qa, "smap", 58, {"topline_answered": 40.0, "answer_in_output": 20.0, "exact_match": 10.0}, [], 1.0),
                 Entry(CLEAN, "smap", 10, {"wer": 5.0}, [], 1.0)])
    header, rows = report.main_table(r)
    assert header == ["system", "tts/test-qa acc. where topline right", "tts/test-qa answer in output (all)",
                      "librispeech/test-clean WER↓"]
    assert rows[0] == ["smap", "40.0", "20.0", "5.0"]
