"""Each metric against figures worked out by hand on small inputs."""

from types import SimpleNamespace

import pytest

from smap.evaluate import metrics
from smap.evaluate.metrics import MetricError
from smap.text import wer  # training validates with it too: it lives below smap.evaluate


def test_wer_counts_edits_over_reference_words_after_normalisation():
    # "hello world" / "hello duck": 1 substitution; "i like monty python" / "i like python":
    # 1 deletion. 2 errors over 6 reference words. Case and punctuation are not errors.
    refs = ["Hello, World!", "I like Monty Python."]
    hyps = ["hello duck", "i LIKE python"]
    assert wer(refs, hyps) == pytest.approx(100 * 2 / 6)


def test_wer_counts_insertions_and_keeps_apostrophes():
    assert wer(["a b"], ["a b c"]) == pytest.approx(50.0)
    assert wer(["Don't stop."], ["don't stop"]) == 0.0
    assert wer(["don't stop"], ["dont stop"]) == pytest.approx(50.0)


def test_metrics_scores_wer_and_refuses_with_the_same_function_and_error():
    assert metrics.wer is wer and metrics.MetricError is MetricError  # `smap evaluate` catches MetricError


def test_wer_refuses_what_it_cannot_score():
    with pytest.raises(MetricError, match="different lengths"):
        wer(["a", "b"], ["a"])
    with pytest.raises(MetricError, match="nothing to score"):
        wer([], [])
    with pytest.raises(MetricError, match="empty after normalisation"):
        wer(["?!"], ["a"])


def test_bleu_by_hand():
    # hyp "the cat is on the mat" / ref "the cat sat on the mat": n-gram precisions 5/6, 3/5,
    # 1/4 and 0/3, the zero smoothed to 1/(2*3) (sacrebleu's "exp"); equal lengths, no penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert metrics.bleu(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(expected, abs=1e-6)
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_bleu_segments_chinese_by_character():
    # 7 characters, the last two differ: precisions 5/7, 4/6, 3/5, 2/4. Unsegmented it is one
    # wrong token and BLEU 0, so the tokeniser choice shows.
    ref, hyp = "我同意这个观点", "我同意这个看法"
    expected = 100 * (5 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25
    assert metrics.bleu([ref], [hyp], "zh") == pytest.approx(expected, abs=1e-6)
    assert metrics.bleu([ref], [hyp], "de") == 0.0


def test_chrf_by_hand():
    # "abc" vs "abd": char 1-grams P=R=2/3, 2-grams 1/2, 3-grams 0; no 4..6-grams, so the
    # average runs over 3 orders: P=R=(2/3+1/2+0)/3=7/18, and F-beta of equal P and R is 7/18.
    assert metrics.chrf(["abd"], ["abc"]) == pytest.approx(100 * 7 / 18, abs=1e-6)


class FakeComet:
    """Behaves like a COMET model: `predict(samples, ...)` returns scores and a system score."""

    def __init__(self, by_output):
        self.by_output = by_output
        self.samples = None

    def predict(self, samples, batch_size=16, gpus=1, progress_bar=True, **kw):
        self.samples = samples
        scores = [self.by_output[s["mt"]] for s in samples]
        return SimpleNamespace(scores=scores, system_score=sum(scores) / len(scores))


def test_comet_passes_source_output_reference_and_scales_by_100():
    model = FakeComet({"Bonjour.": 0.8, "Salut.": 0.6})
    got = metrics.comet(["Hello.", "Hi."], ["Bonjour.", "Salut !"], ["Bonjour.", "Salut."], model)
    assert got == pytest.approx(70.0)
    assert model.samples == [{"src": "Hello.", "mt": "Bonjour.", "ref": "Bonjour."},
                             {"src": "Hi.", "mt": "Salut.", "ref": "Salut !"}]


def test_load_comet_names_a_missing_checkpoint(tmp_path):
    pytest.importorskip("comet")
    with pytest.raises(MetricError, match=r"--comet-model .*model\.ckpt"):
        metrics.load_comet(str(tmp_path))  # a folder without checkpoints/model.ckpt
    with pytest.raises(MetricError, match="not a hub id"):
        metrics.load_comet(str(tmp_path / "nothing" / "here"))


def test_adherence_shares_by_hand():
    langs = {"Bonjour à tous.": "fr", "Merci.": "fr", "Thank you.": "en", "Danke.": "de", "": None}
    identify = lambda texts: [langs[t] for t in texts]  # noqa: E731
    got = metrics.adherence(list(langs), "fr", identify)
    assert got == {"target": pytest.approx(40.0), "english": pytest.approx(20.0)}


def test_language_identifier_is_offline_and_right_on_clear_sentences():
    identify = metrics.LanguageIdentifier()
    texts = ["Le Parlement européen a adopté la résolution hier soir.",
             "Das Europäische Parlament hat die Entschließung gestern angenommen.",
             "The European Parliament adopted the resolution last night.",
             "欧洲议会今天通过了这项决议。", "   "]
    assert identify(texts) == ["fr", "de", "en", "zh", None]


def test_parse_verdict():
    assert metrics.parse_verdict("Yes.") is True
    assert metrics.parse_verdict("no, it contradicts the reference") is False
    assert metrics.parse_verdict("The answer is correct: yes") is True
    assert metrics.parse_verdict("maybe") is None
    assert metrics.parse_verdict("It could be yes or no") is None


def test_judged_accuracy_averages_judges_by_hand():
    prompts = metrics.judge_prompts(["Q1", "Q2", "Q3", "Q4"], ["r1", "r2", "r3", "r4"], ["h1", "h2", "h3", "h4"])
    assert prompts[1] == metrics.judge_prompt("Q2", "r2", "h2")
    lenient = ["Yes"] * 3 + ["No"]  # yes to all but the last
    strict = ["yes", "no", "I cannot tell", "NO."]  # yes to the first only, and one reply that is no verdict
    got = metrics.judged_tally({"lenient": lenient, "strict": strict}, len(prompts))
    assert got.per_judge == {"lenient": 75.0, "strict": 25.0}
    assert got.mean == 50.0
    assert got.unparsed == {"lenient": 0, "strict": 1}


def test_judged_accuracy_refuses_a_judge_that_skips_prompts():
    with pytest.raises(MetricError, match="judge short gave 1 replies to 2"):
        metrics.judged_tally({"short": ["yes"]}, 2)
    with pytest.raises(MetricError, match="at least one judge"):
        metrics.judged_tally({}, 1)
    with pytest.raises(MetricError):
        metrics.judge_prompts(["q", "q"], ["r"], ["h", "h"])


@pytest.mark.parametrize("output, picked", [
    ("B", 1), ("(B)", 1), ("B. a dog", 1), ("C)", 2), ("The answer is C.", 2), ("answer: B", 1),
    ("A dog.", 1),  # the article is no label: the choice's text decides
    ("It is a bird.", 2), ("a bird or a cat", None), ("D", None), ("I don't know", None),
])
def test_choice_index(output, picked):
    assert metrics.choice_index(output, ["a cat", "a dog", "a bird"]) == picked


def test_exact_choice_by_hand():
    choices = [["red", "green", "blue"]] * 4
    hyps = ["B", "green", "C. blue", "no idea"]
    answers = [1, "B", "(B) green", "A"]  # index, label, labelled text: all forms of the gold choice
    # right, right, wrong (picked blue, gold green), wrong (no pick): 2 of 4.
    assert metrics.exact_choice(hyps, answers, choices) == 50.0
    with pytest.raises(MetricError, match="none of the choices"):
        metrics.exact_choice(["A"], ["purple"], [["red", "green"]])
    with pytest.raises(MetricError, match="fewer than two options"):
        metrics.exact_choice(["A"], ["A"], [[]])


def test_bare_label_choices_take_their_texts_from_the_question():
    question = "What ran? (A) a cat (B) a dog"
    assert metrics.options_of(question, ["A", "B"]) == ["a cat", "a dog"]
    assert metrics.options_of("What ran?", ["A", "B"]) == ["A", "B"]  # no texts anywhere: labels it is
    assert metrics.options_of(question, ["cat", "dog"]) == ["cat", "dog"]
    # With labels only, "a" in the output is an article, not choice A.
    assert metrics.choice_index("it is a mystery", ["A", "B"]) is None


@pytest.mark.parametrize("question, options", [
    ("What barked? (A) a cat (B) a dog (C) a bird", ["a cat", "a dog", "a bird"]),
    ("Which colour?\nA. red\nB) green", ["red", "green"]),
    ("Did (I) say (II)?", []),  # labels must run A, B, ...
    ("Who spoke?", []),
])
def test_options_written_into_the_question(question, options):
    assert metrics.options_in(question) == options


def test_exact_match_after_normalisation_by_hand():
    refs = ["Paris", "the Eiffel Tower", "1889", "Gustave Eiffel"]
    hyps = ["paris.", "Eiffel tower!", "In 1889", "Eiffel"]
    # case, punctuation and articles do not count; extra or missing words do: 2 of 4.
    assert metrics.exact_match(refs, hyps) == 50.0


def _tiny_comet_folder(root):
    """A COMET regression metric in the layout of Unbabel/wmt22-comet-da (hparams.yaml,
    checkpoints/model.ckpt) around a 2-layer XLM-R with a tokenizer trained here: no download."""
    import pytorch_lightning as pl
    import torch
    import yaml
    from comet.models import RegressionMetric
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(["the cat sat on the mat", "le chat est sur le tapis"] * 10,
                            trainers.UnigramTrainer(vocab_size=60, special_tokens=specials, unk_token="<unk>"))
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    encoder = root / "encoder"
    fast.save_pretrained(encoder)
    XLMRobertaConfig(vocab_size=len(fast), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, pad_token_id=fast.pad_token_id
                     ).save_pretrained(encoder)
    torch.manual_seed(0)
    model = RegressionMetric(pretrained_model=str(encoder), load_pretrained_weights=False, hidden_sizes=[8],
                             layer="mix", layer_transformation="sparsemax", local_files_only=True)
    (root / "checkpoints").mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, root / "checkpoints" / "model.ckpt")
    (root / "hparams.yaml").write_text(yaml.safe_dump({**dict(model.hparams), "class_identifier": "regression_metric"}))


@pytest.mark.filterwarnings("ignore:.*LeafSpec")  # Lightning's own deprecation, on every predict
def test_comet_runs_for_real_on_a_tiny_model_from_a_local_folder(tmp_path):
    """unbabel-comet 2.2.7 under our transformers 5, numpy 2 and Lightning 2: load, predict, scale."""
    pytest.importorskip("comet")
    _tiny_comet_folder(tmp_path)
    model = metrics.load_comet(str(tmp_path), local_only=True)
    src, ref, hyp = ["the cat sat"], ["le chat est sur le tapis"], ["le chat"]
    got = metrics.comet(src, ref, hyp, model)
    direct = model.predict([{"src": src[0], "mt": hyp[0], "ref": ref[0]}], gpus=0, progress_bar=False)
    assert got == pytest.approx(100 * direct.system_score)
    assert metrics.comet(src, ref, hyp, model) == pytest.approx(got)  # deterministic in eval mode


def test_answer_in_output_finds_the_answer_as_whole_words():
    from smap.evaluate.metrics import answer_in_output

    refs = ["Nairobi", "12", "the Pacific Ocean", "red"]
    hyps = ["The capital of Kenya is Nairobi.", "It is 120.", "Pacific ocean, I think", "I don't know"]
    # 1: yes; 2: "120" is not "12"; 3: yes (article dropped, case and punctuation normalised); 4: no
    assert answer_in_output(refs, hyps) == 50.0


def test_answers_match_with_or_without_accents():
    from smap.evaluate.metrics import answers_found, exact_match

    assert answers_found(["Bogota", "Bogotá", "Sao Paulo"], ["The capital of Colombia is Bogotá.", "bogota", "São Paulo."]) == [True] * 3
    assert exact_match(["Zürich"], ["zurich"]) == 100.0
    assert answers_found(["Bogota"], ["Bogotano"]) == [False]  # still whole words
