import json

import pytest
import torch

from smap.data.store import FeatureStore, StoreError, StoreWriter, open_stores


def _feats(n, dim=4, v=0.0):
    return torch.full((n, dim), v)


def test_round_trip_in_float16_and_sharding(tmp_path):
    with StoreWriter(tmp_path, "enc", 4, 50.0, shard_size=2) as w:
        for i in range(5):
            w.add({"id": f"u{i}", "text": f"text {i}", "duration": 0.1}, _feats(i + 1, v=i))
    store = FeatureStore(tmp_path)
    assert len(store) == 5 and len(store.info.shards) == 3
    assert [r["frames"] for r in store.records] == [1, 2, 3, 4, 5]
    f = store.features(3)
    assert f.dtype == torch.float16 and f.shape == (4, 4) and float(f[0, 0]) == 3.0
    store.verify()


def test_reopened_writer_knows_what_is_done_and_adopts_orphans(tmp_path):
    with StoreWriter(tmp_path, "enc", 4, 50.0, shard_size=2) as w:
        for i in range(4):
            w.add({"id": f"u{i}", "text": "t"}, _feats(2))
    # A run killed after renaming a shard but before rewriting the index:
    index = json.loads((tmp_path / "store.json").read_text())
    index["shards"] = index["shards"][:1]
    (tmp_path / "store.json").write_text(json.dumps(index))
    w = StoreWriter(tmp_path, "enc", 4, 50.0)
    assert w.done == {"u0", "u1", "u2", "u3"}
    assert len(FeatureStore(tmp_path)) == 4


def test_exception_drops_only_the_partial_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path, "enc", 4, 50.0, shard_size=2) as w:
            for i in range(3):
                w.add({"id": f"u{i}", "text": "t"}, _feats(2))
            raise RuntimeError("killed")
    assert [r["id"] for r in FeatureStore(tmp_path).records] == ["u0", "u1"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_corrupt_and_missing_shards_are_named(tmp_path):
    with StoreWriter(tmp_path, "enc", 4, 50.0, shard_size=1) as w:
        for i in range(2):
            w.add({"id": f"u{i}", "text": "t"}, _feats(2))
    shard = tmp_path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard-00001.safetensors: checksum mismatch"):
        FeatureStore(tmp_path).verify()
    shard.unlink()
    with pytest.raises(StoreError, match="shard-00001.safetensors: shard listed in store.json is missing"):
        FeatureStore(tmp_path)


def test_mismatches_are_refused(tmp_path):
    with StoreWriter(tmp_path / "a", "enc", 4, 50.0) as w:
        w.add({"id": "x", "text": "t"}, _feats(2))
        with pytest.raises(StoreError, match="duplicate utterance id 'x'"):
            w.add({"id": "x", "text": "t"}, _feats(2))
        with pytest.raises(StoreError, match=r"expected \(frames, 4\)"):
            w.add({"id": "y", "text": "t"}, _feats(2, dim=3))
    with StoreWriter(tmp_path / "b", "enc", 8, 50.0) as w:
        w.add({"id": "x", "text": "t"}, _feats(2, dim=8))
    with pytest.raises(StoreError, match="dim 8 differ"):
        open_stores([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(StoreError, match="not enc2 of dim 4"):
        StoreWriter(tmp_path / "a", "enc2", 4, 50.0)
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tmp_path / "nothing")


def test_an_index_pointing_outside_its_folder_is_refused_naming_the_file(tmp_path):
    with StoreWriter(tmp_path / "other", "enc", 4, 50.0) as w:
        w.add({"id": "elsewhere", "text": "t"}, _feats(2))
    with StoreWriter(tmp_path / "s", "enc", 4, 50.0) as w:
        w.add({"id": "x", "text": "t"}, _feats(2))
    index = tmp_path / "s" / "store.json"
    good = json.loads(index.read_text())
    for name in ("../other/shard-00000.safetensors", str(tmp_path / "other" / "shard-00000.safetensors"), "", 7):
        bad = {**good, "shards": [{**good["shards"][0], "file": name}]}
        index.write_text(json.dumps(bad))
        with pytest.raises(StoreError) as e:
            FeatureStore(tmp_path / "s")
        assert str(e.value) == f"{index}: {name!r} is not a file name inside {tmp_path / 's'}"
        with pytest.raises(StoreError, match="is not a file name inside"):
            StoreWriter(tmp_path / "s", "enc", 4, 50.0)  # nor is it written to


def test_an_id_in_two_shards_is_refused_when_the_store_is_opened(tmp_path):
    with StoreWriter(tmp_path, "enc", 4, 50.0, shard_size=1) as w:
        w.add({"id": "a", "text": "t"}, _feats(2))
        w.add({"id": "b", "text": "t"}, _feats(2))
    # shard-00001 rewritten to hold "a" as well (a hand-merged store, a copy of a shard)
    from safetensors.torch import save_file

    shard = tmp_path / "shard-00001.safetensors"
    save_file({"a": torch.zeros(2, 4, dtype=torch.float16)}, str(shard),
              metadata={"records": json.dumps([{"id": "a", "text": "t", "frames": 2}])})
    index = json.loads((tmp_path / "store.json").read_text())
    index["shards"][1]["sha256"] = "x"
    (tmp_path / "store.json").write_text(json.dumps(index))
    message = f"{shard}: utterance id 'a' also in shard-00000.safetensors (an id must name one utterance)"
    with pytest.raises(StoreError) as e:
        FeatureStore(tmp_path)
    assert str(e.value) == message
    with pytest.raises(StoreError) as e:
        StoreWriter(tmp_path, "enc", 4, 50.0)
    assert str(e.value) == message


def test_records_never_outgrow_the_safetensors_header(tmp_path):
    """safetensors refuses a header over 100 MB: long records go to more shards, and a record too
    large for any shard is refused by name, before it could make a shard unwritable."""
    from smap.data.store import MAX_RECORD_BYTES, RecordTooLargeError

    text = "a" * 950_000
    with StoreWriter(tmp_path, "enc", 4, 50.0, shard_size=256) as w:
        for i in range(110):  # 104 MB of records in one shard's worth of utterances
            w.add({"id": f"u{i}", "text": text}, _feats(1))
        with pytest.raises(RecordTooLargeError, match=f"utterance 'huge' has .* more than {MAX_RECORD_BYTES}"):
            w.add({"id": "huge", "text": "a" * (MAX_RECORD_BYTES + 1)}, _feats(1))
    store = FeatureStore(tmp_path)
    assert len(store) == 110 and len(store.info.shards) == 3 and store.records[-1]["text"] == text
    store.verify()
