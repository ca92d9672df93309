"""The results schema is versioned: files written by an older edgeprof are read (upgraded), and a
rerun resumes from them instead of measuring again."""
import json
import shutil
from pathlib import Path

import pytest

import edgeprof
from edgeprof.errors import InputError
from edgeprof.results import SCHEMA, RecordKey, ResultStore, read_records, upgrade

FIX = Path(__file__).parent / "fixtures" / "results" / "schema1.jsonl"
DEMO = Path(edgeprof.__file__).parent / "demo" / "data"


def test_schema1_records_are_upgraded():
    raw = [json.loads(line) for line in FIX.read_text().splitlines()]
    assert {r["schema"] for r in raw} == {"edgeprof.result/1"}
    recs = list(read_records(FIX))
    assert len(recs) == len(raw) and {r["schema"] for r in recs} == {SCHEMA}
    lat = [r for r in recs if r["kind"] == "latency"]
    acc = [r for r in recs if r["kind"] == "accuracy"]
    assert lat and all(r["mode"] == "burst" for r in lat)
    assert sorted(r["metric"] for r in acc) == ["top1", "topk:3"]
    # the raw version-1 records lacked both fields
    assert all("mode" not in r for r in raw if r["kind"] == "latency")
    assert any("metric" not in r for r in raw if r["kind"] == "accuracy")


def test_key_is_the_same_for_an_upgraded_record_and_a_new_one():
    old = next(json.loads(x) for x in FIX.read_text().splitlines() if '"latency"' in x)
    assert RecordKey.of(old) == RecordKey.of(upgrade(old))
    k = RecordKey.of(old)
    assert k == RecordKey.latency(old["variant_id"], "local", 1, 1)
    assert k != RecordKey.latency(old["variant_id"], "local", 1, 1, mode="sustained")
    # a plain tuple without the later fields means their defaults
    assert k == RecordKey(old["variant_id"], "local", 1, 1, "latency").normalized()


def test_rerun_resumes_from_a_schema1_file(tmp_path):
    res = tmp_path / "results.jsonl"
    shutil.copyfile(FIX, res)
    before = res.read_bytes()
    model, data = DEMO / "fashion_cnn.onnx", DEMO / "eval.npz"
    p = edgeprof.profile(model, results=res, min_time=0.05, max_time=0.3, processes=1,
                         cache_dir=tmp_path / "cache")
    a = edgeprof.accuracy(model, data, limit=200, results=res, cache_dir=tmp_path / "cache")
    k = edgeprof.accuracy(model, data, limit=200, metric="topk:3", results=res,
                          cache_dir=tmp_path / "cache")
    assert len(p) == len(a) == len(k) == 0  # all three keys were already there
    assert res.read_bytes() == before
    # another setting is measured and appended in the current schema
    b = edgeprof.accuracy(model, data, limit=100, results=res, cache_dir=tmp_path / "cache")
    assert len(b) == 1 and b.records[0]["schema"] == SCHEMA
    with ResultStore(res) as store:
        assert store.has(RecordKey.evaluation("accuracy", b.records[0]["variant_id"], "local",
                                              b.records[0]["data_sha256"]))


def test_a_newer_schema_is_refused_in_one_line(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"schema": "edgeprof.result/9", "kind": "latency"}) + "\n")
    with pytest.raises(InputError, match=r"r.jsonl:1: .*schema 'edgeprof.result/9'.*newer"):
        list(read_records(f))
