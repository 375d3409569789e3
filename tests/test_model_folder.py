"""A model folder that travels (issue 47) and hub ids only where the user means one (issue 48).

Nothing here downloads: the hub functions are replaced by fakes that serve local folders, or that
fail the test if they are called."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import write_store
from smap.attach import AttachConfig, attach
from smap.cli import app
from smap.encoders import EncoderError, load_encoder
from smap.llm import LLMSpecError, load_causal_lm, resolve
from smap.speech_llm import MODEL_FILE, SpeechLLM
from test_attach import save_mapper

runner = CliRunner()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def stores(tmp_path_factory, sentences):
    root = tmp_path_factory.mktemp("stores")
    return write_store(root / "train", sentences[:16]), write_store(root / "valid", sentences[32:35], seed=1)


@pytest.fixture(scope="module")
def attached(tmp_path_factory, stores, tiny_llama):
    """A model folder attached to the tiny LLM, and what `smap infer` says with it on the valid store."""
    out = attach_tiny(tmp_path_factory.mktemp("attached"), stores[0], tiny_llama)
    return out, infer_rows(str(out), stores[1])


def attach_tiny(tmp_path, train, mapper_llm, llm=None):
    """A 2-step Stage 2 of a tiny mapper pretrained for `mapper_llm`, onto `llm` (default: that one)."""
    mapper = save_mapper(tmp_path / "mapper", mapper_llm)
    return attach(AttachConfig(out=str(tmp_path / "model"), mapper=str(mapper), llm=llm, train=[str(train)], steps=2,
                               lr=3e-3, warmup=1, max_frames=300, save_every=1000, eval_every=1000, log_every=1))


def infer_rows(model: str, store, *options: str) -> list[dict]:
    out = store.parent / "rows.jsonl"
    result = runner.invoke(app, ["infer", "--model", model, "--store", str(store), "--max-new-tokens", "6",
                                 "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def fake_hub(monkeypatch, serves: dict):
    """huggingface_hub's snapshot_download, serving local folders by repository id; the calls kept."""
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        return str(serves[repo_id])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def no_hub(monkeypatch):
    import huggingface_hub

    def called(*args, **kwargs):
        pytest.fail(f"the hub was asked for {args or kwargs}")

    for name in ("snapshot_download", "hf_hub_download"):
        monkeypatch.setattr(huggingface_hub, name, called)


def snapshot(folder, tmp_path, name="hub"):
    """A copy of `folder` where the Hugging Face cache keeps a repository's files: snapshots/COMMIT."""
    return shutil.copytree(folder, tmp_path / name / "snapshots" / COMMIT)


def test_a_moved_model_folder_with_its_llm_inside_gives_the_same_outputs(tmp_path, stores, attached, tiny_llama):
    valid = stores[1]
    out = shutil.copytree(attached[0], tmp_path / "model")
    # ship the LLM (and an encoder) inside the model folder and point the folder at them
    shutil.copytree(tiny_llama, out / "llm")
    model = SpeechLLM.from_pretrained(out, llm=str(out / "llm"))
    model.settings.encoder = f"hf:{out / 'encoder'}?layer=2"
    model.save_pretrained(out)
    manifest = json.loads((out / MODEL_FILE).read_text())
    assert (manifest["llm"], manifest["encoder"]) == ("./llm", "hf:./encoder?layer=2")
    assert str(tmp_path) not in json.dumps({k: manifest[k] for k in ("llm", "encoder", "mapper")})

    moved = shutil.move(out, tmp_path / "elsewhere" / "model")
    assert not out.exists()
    assert infer_rows(str(moved), valid) == attached[1]  # the same LLM, the same mapper: the same outputs
    settings = SpeechLLM.from_pretrained(moved).settings
    assert (settings.llm, settings.encoder) == (str(moved / "llm"), f"hf:{moved / 'encoder'}?layer=2")


def test_a_model_folder_whose_llm_is_gone_names_it_and_takes_another_place(tmp_path, stores, attached, tiny_llama):
    valid = stores[1]
    llm = shutil.copytree(tiny_llama, tmp_path / "machine-a" / "llm")
    out = shutil.copytree(attached[0], tmp_path / "machine-a" / "model")
    manifest = json.loads((out / MODEL_FILE).read_text())
    assert manifest["llm"] == str(tiny_llama.resolve())  # outside the folder: absolute
    (out / MODEL_FILE).write_text(json.dumps({**manifest, "llm": str(llm)}))  # as if attached to machine A's copy
    before = attached[1]
    # another machine: the model folder and the LLM, each somewhere else
    moved = shutil.move(out, tmp_path / "machine-b" / "model")
    llm_b = shutil.move(llm, tmp_path / "machine-b" / "llm")
    line = one_error(runner.invoke(app, ["infer", "--model", str(moved), "--store", str(valid)]))
    assert str(llm.resolve()) in line and "--llm" in line and MODEL_FILE in line
    assert SpeechLLM.from_pretrained(moved, llm=str(llm_b)).settings.llm == str(llm_b.resolve())
    assert infer_rows(str(moved), valid, "--llm", str(llm_b)) == before


def test_model_from_the_hub_is_fetched_at_its_revision_and_loaded(tmp_path, stores, attached, tiny_llama, monkeypatch):
    valid = stores[1]
    out, before = attached
    calls = fake_hub(monkeypatch, {"someone/speech-model": snapshot(out, tmp_path)})
    assert infer_rows("someone/speech-model@v1.0", valid) == before
    assert calls == [("someone/speech-model", "v1.0")]
    model = SpeechLLM.from_pretrained("hf:someone/speech-model")
    assert calls[-1] == ("someone/speech-model", None) and model.settings.llm == str(tiny_llama.resolve())


def test_llm_revision_is_passed_to_the_hub_and_recorded(tmp_path, stores, tiny_llama, monkeypatch):
    train, _ = stores
    calls = fake_hub(monkeypatch, {"someone/tiny": snapshot(tiny_llama, tmp_path)})
    source = resolve("someone/tiny@abc123")
    assert (source.kind, source.path, source.revision) == ("hub", "someone/tiny", "abc123")
    load_causal_lm("someone/tiny@abc123")
    assert calls == [("someone/tiny", "abc123")]
    out = attach_tiny(tmp_path, train, tiny_llama, llm="someone/tiny@abc123")
    manifest = json.loads((out / MODEL_FILE).read_text())
    assert manifest["llm"] == "hf:someone/tiny" and manifest["llm_revision"] == COMMIT
    SpeechLLM.from_pretrained(out)  # loads the very commit it was trained with
    assert calls[-1] == ("someone/tiny", COMMIT)


def test_a_mistyped_relative_path_is_not_taken_for_a_hub_id(tmp_path, stores, monkeypatch):
    _, valid = stores
    no_hub(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for load, error in ((resolve, LLMSpecError), (load_encoder, EncoderError)):
        for spec in ("data/mymodel", "data/mymodel@v1"):
            with pytest.raises(error, match="no such folder") as e:
                load(spec)
            assert "\n" not in str(e.value)
    with pytest.raises(LLMSpecError, match="for the hub repository write hf:data/mymodel"):
        resolve("data/mymodel")
    with pytest.raises(EncoderError, match="no such folder"):
        load_encoder("hf:data/mymodel")  # 'hf:' has always prefixed encoder folders too
    assert "no such folder" in one_error(runner.invoke(app, ["infer", "--model", "data/mymodel", "--store", str(valid)]))
    # written explicitly, it is the hub's (nothing asked for yet)
    assert resolve("hf:data/mymodel@v2").revision == "v2" and resolve("hf:data/mymodel").kind == "hub"
