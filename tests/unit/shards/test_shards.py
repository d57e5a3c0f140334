"""Supervision shards: round trips, atomicity under simulated crashes, resume, manifest."""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import drllm.shards.writer as writer_mod
from drllm.paths import LayerPath, legal_actions
from drllm.shards import (
    OutputLock,
    OutputLockedError,
    duplicates_dropped,
    read_holder,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ShardMismatchError,
    ShardWriter,
    SupervisionRecord,
    completed_example_ids,
    decode_path,
    inprogress_files,
    read_manifest,
    read_shard_metadata,
    read_shards,
    record_to_row,
    rows_to_table,
    shard_files,
    supervision_schema,
)
from drllm.types import Example, SearchResult

L = 6
MODEL = "tiny-llama"
CONFIG = {"search": {"simulations": 50, "c": 1.8, "lam": 3.0}, "model": {"id": MODEL}}


class SimulatedCrash(BaseException):
    """Stands in for the process dying (not an ``Exception``, so no cleanup code catches it)."""


def make_record(i: int, num_layers: int = L, model_id: str = MODEL, dataset: str = "arc_easy",
                n_good: int = 3) -> SupervisionRecord:
    """A consistent record whose paths are reachable by MCTS edits of the default path."""
    rng = np.random.default_rng(i)
    default = LayerPath.default(num_layers)
    good, path = [], default
    for _ in range(n_good):
        actions = legal_actions(path)
        path = actions[int(rng.integers(len(actions)))].apply(path)
        good.append(path)
    rewards = [1.0] * len(good)
    best = min(good, key=lambda p: p.cost) if good else default
    example = Example(
        id=f"ex-{i}", dataset=dataset, split="train", prompt=f"Question {i}: 2+{i}? é∑",
        messages=({"role": "system", "content": "Be brief."},
                  {"role": "user", "content": f"Question {i}: 2+{i}? é∑"}),
        gold=str(2 + i), grader="gsm8k", meta={"level": i % 5, "tags": ["a", "b"]},
    )
    result = SearchResult(
        num_layers=num_layers, default_path=default, default_reward=float(i % 2),
        default_response=f"default answer {i}", best_path=best, best_reward=1.0,
        best_response=f"best answer {i}", best_cost=best.cost,
        layers_saved=num_layers - best.cost, improved=i % 2 == 0, good_paths=tuple(good),
        good_rewards=tuple(rewards), simulations=50, evaluations=17 + i, memo_hits=33 - i,
        stopped_early=i % 3 == 0, solved=True, failed_evaluations=i % 3,
        evaluated_depths=tuple(range(17 + i)), transposition_hits=i, prior_hits=i % 4,
    )
    return SupervisionRecord(example=example, result=result, model_id=model_id,
                             rendered_prompt=f"<|user|>{example.prompt}<|assistant|>",
                             search_seconds=0.25 * (i + 1))


def open_writer(out, writer_id: str = "w0", **kw) -> ShardWriter:
    kw.setdefault("num_layers", L)
    kw.setdefault("model_id", MODEL)
    kw.setdefault("config", CONFIG)
    return ShardWriter(out, writer_id=writer_id, **kw)


def test_round_trip_values_and_paths(tmp_path):
    records = [make_record(i) for i in range(5)]
    with open_writer(tmp_path, rows_per_shard=2) as w:
        for r in records:
            w.add(r)
    assert (w.rows_written, w.shards_written) == (5, 3)
    table = read_shards(tmp_path)
    assert table.schema == supervision_schema(L)
    rows = table.to_pylist()
    assert [r["example_id"] for r in rows] == [f"ex-{i}" for i in range(5)]
    for row, rec in zip(rows, records):
        ex, res = rec.example, rec.result
        assert (row["dataset"], row["split"], row["prompt"], row["gold"], row["grader"]) == (
            ex.dataset, ex.split, ex.prompt, ex.gold, ex.grader)
        assert json.loads(row["messages"]) == [dict(m) for m in ex.messages]
        assert json.loads(row["meta"]) == dict(ex.meta)
        assert row["rendered_prompt"] == rec.rendered_prompt
        assert (row["model_id"], row["num_layers"]) == (MODEL, L)
        assert decode_path(row["default_path"]) == res.default_path
        assert decode_path(row["best_path"], L) == res.best_path
        assert isinstance(decode_path(row["best_path"]), LayerPath)
        assert tuple(decode_path(p) for p in row["good_paths"]) == res.good_paths
        assert row["good_rewards"] == list(res.good_rewards)
        assert (row["default_reward"], row["best_reward"]) == (res.default_reward, res.best_reward)
        assert (row["default_response"], row["best_response"]) == (
            res.default_response, res.best_response)
        assert (row["best_cost"], row["layers_saved"], row["improved"]) == (
            res.best_cost, res.layers_saved, res.improved)
        assert (row["simulations"], row["evaluations"], row["memo_hits"]) == (
            res.simulations, res.evaluations, res.memo_hits)
        assert row["stopped_early"] == res.stopped_early
        assert row["search_seconds"] == pytest.approx(rec.search_seconds)
    # Arrow scalars and numpy arrays decode too.
    assert decode_path(table.column("best_path")[0]) == records[0].result.best_path
    as_numpy = np.asarray(rows[1]["best_path"], dtype=np.int8)
    assert decode_path(as_numpy) == records[1].result.best_path


def test_in_memory_table_equals_file_table(tmp_path):
    records = [make_record(i) for i in range(3)]
    mem = rows_to_table(records, L, MODEL)
    with open_writer(tmp_path) as w:
        for r in records:
            w.add(r)
    assert read_shards(tmp_path).replace_schema_metadata(None).equals(mem)
    assert mem.to_pylist()[2] == record_to_row(records[2])


def test_schema_types():
    schema = supervision_schema(7)
    assert schema.field("best_path").type == pa.list_(pa.field("element", pa.int8()), 7)
    assert schema.field("good_paths").type.value_type.list_size == 7
    assert schema.field("dataset").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("model_id").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("num_layers").type == pa.int16()
    assert schema.field("best_reward").type == pa.float32()
    assert schema.field("simulations").type == pa.int32()
    with pytest.raises(ValueError, match="num_layers"):
        supervision_schema(0)


def test_crash_between_write_and_rename_leaves_nothing_visible(tmp_path, monkeypatch, caplog):
    w = open_writer(tmp_path, rows_per_shard=100)
    for i in range(3):
        w.add(make_record(i))

    def crash(src, dst):
        raise SimulatedCrash()

    monkeypatch.setattr(writer_mod.os, "replace", crash)
    with pytest.raises(SimulatedCrash):
        w.flush()
    monkeypatch.undo()
    assert shard_files(tmp_path) == []
    assert list(tmp_path.glob("shard-*.parquet")) == []
    stale = inprogress_files(tmp_path)
    assert [p.name for p in stale] == [".shard-w0-000000.parquet.inprogress"]
    assert pq.read_metadata(stale[0]).num_rows == 3  # the file was complete, just not renamed
    assert completed_example_ids(tmp_path) == set() and read_manifest(tmp_path) == []

    with caplog.at_level(logging.WARNING, logger="drllm.shards"):
        w2 = open_writer(tmp_path)
    assert inprogress_files(tmp_path) == []
    assert any("stale in-progress" in r.message for r in caplog.records)
    w2.add(make_record(0))
    assert w2.flush().name == "shard-w0-000000.parquet"
    assert completed_example_ids(tmp_path) == {"ex-0"}


def test_other_writers_inprogress_removed_only_when_stale(tmp_path):
    old = tmp_path / ".shard-host-7-000004.parquet.inprogress"
    live = tmp_path / ".shard-host-8-000000.parquet.inprogress"
    old.write_bytes(b"partial")
    live.write_bytes(b"partial")
    past = time.time() - 3600
    os.utime(old, (past, past))
    open_writer(tmp_path, writer_id="host-9", stale_inprogress_seconds=600)
    assert not old.exists() and live.exists()


def test_write_error_cleans_tmp_and_keeps_rows(tmp_path, monkeypatch):
    w = open_writer(tmp_path, rows_per_shard=100)
    w.add(make_record(0))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(writer_mod.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    monkeypatch.undo()
    assert inprogress_files(tmp_path) == [] and w.buffered == 1
    assert w.flush().name == "shard-w0-000000.parquet"
    assert completed_example_ids(tmp_path) == {"ex-0"}


def test_crash_after_rename_before_manifest_is_repaired(tmp_path, monkeypatch):
    w = open_writer(tmp_path)
    w.add(make_record(0))
    w.flush()
    w.add(make_record(1))

    def crash(out_dir, entries):
        raise SimulatedCrash()

    monkeypatch.setattr(writer_mod, "append_manifest", crash)
    with pytest.raises(SimulatedCrash):
        w.flush()
    monkeypatch.undo()
    assert [e["file"] for e in read_manifest(tmp_path)] == ["shard-w0-000000.parquet"]
    assert completed_example_ids(tmp_path) == {"ex-0", "ex-1"}  # the shard itself is complete
    w2 = open_writer(tmp_path)
    manifest = read_manifest(tmp_path)
    assert [e["file"] for e in manifest] == [p.name for p in shard_files(tmp_path)]
    assert manifest[1]["rows"] == 1 and manifest[1]["num_layers"] == L
    w2.add(make_record(2))
    assert w2.flush().name == "shard-w0-000002.parquet"


def test_seq_continues_and_never_overwrites(tmp_path):
    with open_writer(tmp_path, rows_per_shard=1) as w:
        w.add(make_record(0))
        w.add(make_record(1))
    with open_writer(tmp_path, rows_per_shard=1) as w:
        w.add(make_record(2))
    with open_writer(tmp_path, writer_id="w1", rows_per_shard=1) as w:
        w.add(make_record(3))
    assert [p.name for p in shard_files(tmp_path)] == [
        "shard-w0-000000.parquet", "shard-w0-000001.parquet", "shard-w0-000002.parquet",
        "shard-w1-000000.parquet"]
    # Two live writers wrongly sharing an id: the second must refuse to overwrite.
    a, b = open_writer(tmp_path, writer_id="w2"), open_writer(tmp_path, writer_id="w2")
    a.add(make_record(10))
    a.flush()
    b.add(make_record(11))
    with pytest.raises(FileExistsError, match="writer_id"):
        b.flush()
    assert b.buffered == 1
    assert completed_example_ids(tmp_path) == {f"ex-{i}" for i in (0, 1, 2, 3, 10)}


def test_rows_per_shard_flushing(tmp_path):
    w = open_writer(tmp_path, rows_per_shard=3)
    for i in range(7):
        w.add(make_record(i))
    assert (w.shards_written, w.rows_written, w.buffered) == (2, 6, 1)
    w.close()
    assert [pq.read_metadata(p).num_rows for p in shard_files(tmp_path)] == [3, 3, 1]
    assert w.close() is None and w.shards_written == 3  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        w.add(make_record(9))


def test_flush_seconds_uses_oldest_buffered_row(tmp_path):
    now = [100.0]
    w = open_writer(tmp_path, rows_per_shard=100, flush_seconds=10.0, clock=lambda: now[0])
    w.add(make_record(0))
    now[0] = 105.0
    w.add(make_record(1))
    assert w.flush_if_due() is None and w.shards_written == 0
    now[0] = 110.0
    assert w.flush_if_due().name == "shard-w0-000000.parquet"
    w.add(make_record(2))
    now[0] = 125.0
    w.add(make_record(3))  # the oldest row waited 15 s: this add writes both
    assert (w.shards_written, w.rows_written, w.buffered) == (2, 4, 0)


def test_mismatched_num_layers_or_model_raises(tmp_path):
    with open_writer(tmp_path) as w:
        w.add(make_record(0))
        with pytest.raises(ShardMismatchError, match="L=7"):
            w.add(make_record(1, num_layers=7))
        with pytest.raises(ShardMismatchError, match="other-model"):
            w.add(make_record(2, model_id="other-model"))
    with pytest.raises(ShardMismatchError, match="L=6"):
        open_writer(tmp_path, num_layers=7)
    with pytest.raises(ShardMismatchError, match="another model"):
        open_writer(tmp_path, model_id="other-model")
    (tmp_path / MANIFEST_NAME).unlink()  # a copy that lost its sidecar is still checked
    with pytest.raises(ShardMismatchError):
        open_writer(tmp_path, num_layers=7)
    with pytest.raises(ShardMismatchError):
        rows_to_table([make_record(0, num_layers=7)], L, MODEL)
    assert read_shards(tmp_path).num_rows == 1


def test_read_shards_refuses_mixed_directories(tmp_path):
    with open_writer(tmp_path / "a") as w:
        w.add(make_record(0))
    with open_writer(tmp_path / "b", num_layers=7) as w:
        w.add(make_record(1, num_layers=7))
    src = shard_files(tmp_path / "b")[0]
    src.rename(tmp_path / "a" / "shard-x-000000.parquet")
    with pytest.raises(ValueError, match="num_layers"):
        read_shards(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no complete shards"):
        read_shards(tmp_path / "b")


def test_manifest_lines_match_files(tmp_path):
    with open_writer(tmp_path, rows_per_shard=2) as w:
        for i in range(5):
            w.add(make_record(i))
    manifest = read_manifest(tmp_path)
    files = shard_files(tmp_path)
    assert [e["file"] for e in manifest] == [p.name for p in files]
    for entry, path in zip(manifest, files):
        meta = read_shard_metadata(path)
        assert entry["rows"] == entry["example_ids"] == meta["rows"]
        assert entry["schema_version"] == SCHEMA_VERSION
        assert (entry["model_id"], entry["num_layers"]) == (MODEL, L)
        assert entry["config_hash"] == meta["config_hash"] == w.config_hash
        assert entry["created"] == meta["created"] and entry["writer_id"] == "w0"
    assert sum(e["rows"] for e in manifest) == 5


def test_torn_manifest_line_tolerated_and_repaired(tmp_path):
    with open_writer(tmp_path) as w:
        w.add(make_record(0))
    path = tmp_path / MANIFEST_NAME
    with open(path, "ab") as f:
        f.write(b'{"file": "shard-w0-0000')
    assert [e["file"] for e in read_manifest(tmp_path)] == ["shard-w0-000000.parquet"]
    with open_writer(tmp_path) as w:
        w.add(make_record(1))
    assert path.read_bytes().endswith(b"}\n")
    assert [e["file"] for e in read_manifest(tmp_path)] == [
        "shard-w0-000000.parquet", "shard-w0-000001.parquet"]
    path.write_bytes(b"not json\n" + path.read_bytes())
    with pytest.raises(ValueError, match="line 1"):
        read_manifest(tmp_path)


def test_completed_example_ids_and_resume(tmp_path):
    assert completed_example_ids(tmp_path / "missing") == set()
    with open_writer(tmp_path, rows_per_shard=2) as w:
        for i in range(3):
            w.add(make_record(i))
        w.add(make_record(4, dataset="gsm8k"))
        w.add(make_record(0))  # duplicate within this writer's lifetime
        assert w.duplicates_skipped == 1
    assert completed_example_ids(tmp_path) == {"ex-0", "ex-1", "ex-2", "ex-4"}
    assert completed_example_ids(tmp_path, dataset="gsm8k") == {"ex-4"}
    with open_writer(tmp_path) as w:  # rerun: already-written examples are not written again
        for i in range(6):
            w.add(make_record(i, dataset="gsm8k" if i == 4 else "arc_easy"))
        assert w.duplicates_skipped == 4
        w.add(make_record(4))  # same id in another dataset is another example
        assert w.duplicates_skipped == 4
    table = read_shards(tmp_path, columns=["dataset", "example_id"])
    keys = list(zip(table.column("dataset").to_pylist(), table.column("example_id").to_pylist()))
    assert len(keys) == len(set(keys)) == 7
    assert completed_example_ids(tmp_path, dataset="arc_easy") == {f"ex-{i}" for i in range(6)}


def test_file_metadata_holds_version_and_config(tmp_path):
    with open_writer(tmp_path, writer_id="host-12") as w:
        w.add(make_record(0))
    path = shard_files(tmp_path)[0]
    raw = pq.read_schema(path).metadata
    assert raw[b"drllm.schema_version"] == b"3"
    assert json.loads(raw[b"drllm.config"]) == CONFIG
    meta = read_shard_metadata(path)
    assert meta["config"] == CONFIG and meta["model_id"] == MODEL and meta["num_layers"] == L
    assert meta["writer_id"] == "host-12" and meta["created"].endswith("+00:00")
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    assert read_shards(tmp_path).schema.metadata[b"drllm.schema_version"] == b"3"


def test_construction_fails_fast(tmp_path):
    with pytest.raises(ValueError, match="writer_id"):
        open_writer(tmp_path, writer_id=".hidden")
    with pytest.raises(ValueError, match="writer_id"):
        open_writer(tmp_path, writer_id="a/b")
    with pytest.raises(TypeError, match=r"config\.bad"):
        open_writer(tmp_path, config={"bad": object()})
    with pytest.raises(ValueError, match="rows_per_shard"):
        open_writer(tmp_path, rows_per_shard=0)


def test_omegaconf_config_is_stored_resolved(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"a": 2, "b": "${a}", "c": [1, {"d": tmp_path.name}]})
    with open_writer(tmp_path, config=cfg) as w:
        w.add(make_record(0))
    assert read_shard_metadata(shard_files(tmp_path)[0])["config"] == {
        "a": 2, "b": 2, "c": [1, {"d": tmp_path.name}]}


def test_inconsistent_record_rejected_at_add(tmp_path):
    rec = make_record(0)
    bad = SupervisionRecord(rec.example, type(rec.result)(**{**rec.result.__dict__,
                                                           "best_cost": 99}),
                            MODEL, "p", 1.0)
    with open_writer(tmp_path) as w:
        with pytest.raises(ValueError, match="best_cost"):
            w.add(bad)
        w.add(rec)  # the rejected id was not marked as written
    assert completed_example_ids(tmp_path) == {"ex-0"}


def test_decode_path_rejects_bad_values():
    assert decode_path([0, 1, 2]) == LayerPath.parse("SER")
    for bad in (None, [1, 3], [1.0, 1], "EES", np.zeros((2, 2), dtype=np.int8)):
        with pytest.raises(ValueError):
            decode_path(bad)
    with pytest.raises(ValueError, match="expected 4"):
        decode_path([1, 1, 1], 4)


def test_context_manager_flushes_on_error(tmp_path):
    with pytest.raises(KeyError):
        with open_writer(tmp_path) as w:
            w.add(make_record(0))
            raise KeyError("driver failed")
    assert completed_example_ids(tmp_path) == {"ex-0"}


# ---------------------------------------------------------------------------- partial shards merge


def test_time_flushes_merge_into_full_shards_and_on_close(tmp_path):
    now = [0.0]
    w = open_writer(tmp_path, rows_per_shard=4, flush_seconds=1.0, clock=lambda: now[0])
    for i in range(9):  # a slow search: every row waits past flush_seconds
        w.add(make_record(i))
        now[0] += 2.0
        w.flush_if_due()
    # 9 one-row flushes: each time 4 partial rows add up, they became one shard
    sizes = sorted(pq.read_metadata(p).num_rows for p in shard_files(tmp_path))
    assert sizes == [1, 4, 4]
    w.close()
    assert sorted(pq.read_metadata(p).num_rows for p in shard_files(tmp_path)) == [1, 4, 4]
    assert completed_example_ids(tmp_path) == {f"ex-{i}" for i in range(9)}
    assert sorted(e["file"] for e in read_manifest(tmp_path)) == [
        p.name for p in shard_files(tmp_path)]
    assert sum(e["rows"] for e in read_manifest(tmp_path)) == 9
    table = read_shards(tmp_path)
    assert table.num_rows == 9 and duplicates_dropped(table) == 0


def test_close_merges_the_partials_with_the_last_rows(tmp_path):
    now = [0.0]
    w = open_writer(tmp_path, rows_per_shard=10, flush_seconds=1.0, clock=lambda: now[0])
    for i in range(3):
        w.add(make_record(i))
        now[0] += 2.0
        w.flush_if_due()
    w.add(make_record(3))
    assert len(shard_files(tmp_path)) == 3
    w.close()
    assert [pq.read_metadata(p).num_rows for p in shard_files(tmp_path)] == [4]
    assert w.shards_merged == 4 and read_shards(tmp_path).num_rows == 4


def test_resume_merges_a_killed_runs_partials(tmp_path):
    for k in range(5):  # five killed runs, each left one 1-row shard
        w = open_writer(tmp_path, writer_id=f"run{k}", rows_per_shard=3)
        w.add(make_record(k))
        w.flush()
    resumed = open_writer(tmp_path, writer_id="run5", rows_per_shard=3, merge_on_open=True)
    sizes = sorted(pq.read_metadata(p).num_rows for p in shard_files(tmp_path))
    assert sizes == [2, 3]
    assert completed_example_ids(tmp_path) == {f"ex-{k}" for k in range(5)}
    resumed.add(make_record(1))  # already written: still refused after the merge
    assert resumed.duplicates_skipped == 1


def test_a_merge_interrupted_before_its_deletes_is_read_once_and_finished(tmp_path, monkeypatch):
    now = [0.0]
    w = open_writer(tmp_path, rows_per_shard=3, flush_seconds=1.0, clock=lambda: now[0])
    monkeypatch.setattr(writer_mod, "delete_replaced", lambda *a, **k: 0)  # crash before deletes
    for i in range(3):
        w.add(make_record(i))
        now[0] += 2.0
        w.flush_if_due()
    assert len(shard_files(tmp_path)) == 4  # 3 sources + the merged shard
    table = read_shards(tmp_path)  # every row once, the copies dropped and counted
    assert sorted(table.column("example_id").to_pylist()) == ["ex-0", "ex-1", "ex-2"]
    assert duplicates_dropped(table) == 3
    assert [e["rows"] for e in read_manifest(tmp_path)] == [3]
    monkeypatch.undo()
    open_writer(tmp_path, writer_id="w1", rows_per_shard=3)  # the next open finishes the merge
    assert [pq.read_metadata(p).num_rows for p in shard_files(tmp_path)] == [3]


def test_reader_drops_duplicate_rows_of_two_drivers_keeping_the_first(tmp_path):
    a = open_writer(tmp_path, writer_id="a")
    b = open_writer(tmp_path, writer_id="b")  # opened before a wrote: both search ex-1
    a.add(make_record(1))
    a.add(make_record(2))
    b.add(make_record(1, dataset="arc_easy"))
    b.add(make_record(3))
    a.close()
    b.close()
    table = read_shards(tmp_path)
    assert sorted(table.column("example_id").to_pylist()) == ["ex-1", "ex-2", "ex-3"]
    assert duplicates_dropped(table) == 1
    first = pq.read_table(shard_files(tmp_path)[0]).to_pylist()[0]
    kept = [r for r in table.to_pylist() if r["example_id"] == "ex-1"][0]
    assert kept == first  # the first file's row (writer "a") is the one kept


# ---------------------------------------------------------------------------- directory lock


def test_second_driver_is_refused_naming_the_holder(tmp_path):
    import socket

    with OutputLock(tmp_path, heartbeat_s=0) as first:
        with pytest.raises(OutputLockedError, match=rf"host {socket.gethostname()}, pid "
                                                    rf"{os.getpid()}, since .*T.*"):
            OutputLock(tmp_path, heartbeat_s=0).acquire()
        assert read_holder(tmp_path) == first.holder
    assert read_holder(tmp_path) is None  # released
    OutputLock(tmp_path, heartbeat_s=0).acquire().release()


def test_stale_locks_are_taken_over(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    import socket

    def plant(host: str, pid: int, heartbeat: float) -> None:
        (tmp_path / ".drllm-lock.json").write_text(json.dumps(
            {"host": host, "pid": pid, "started": "2020", "heartbeat": heartbeat,
             "token": "old"}))

    plant(socket.gethostname(), pid, time.time())  # dead pid on this host: stale at once
    lock = OutputLock(tmp_path, heartbeat_s=0).acquire()
    assert lock.holder.pid == os.getpid() and lock.holder.token != "old"
    lock.release()
    plant("other-node", 1, time.time() - 1000)  # another host, silent for 1000 s
    lock = OutputLock(tmp_path, heartbeat_s=0, stale_after_s=300).acquire()
    lock.release()
    plant("other-node", 1, time.time() - 10)  # another host, alive 10 s ago: refused
    with pytest.raises(OutputLockedError, match="host other-node, pid 1"):
        OutputLock(tmp_path, heartbeat_s=0, stale_after_s=300).acquire()


def test_heartbeat_refreshes_and_detects_a_take_over(tmp_path):
    now = [1000.0]
    lock = OutputLock(tmp_path, heartbeat_s=0, clock=lambda: now[0]).acquire()
    now[0] = 1100.0
    lock.heartbeat()
    assert read_holder(tmp_path).heartbeat == 1100.0 and not lock.lost
    now[0] = 2000.0  # silent for 900 s: another driver takes over
    other = OutputLock(tmp_path, heartbeat_s=0, clock=lambda: now[0]).acquire()
    lock.heartbeat()
    assert lock.lost and read_holder(tmp_path) == other.holder
    lock.release()  # not ours any more: left alone
    assert read_holder(tmp_path) == other.holder
    with pytest.raises(ValueError, match="twice heartbeat_s"):
        OutputLock(tmp_path, heartbeat_s=60, stale_after_s=100)


def _with_a_bad_shard(tmp_path, content: bytes):
    with open_writer(tmp_path, rows_per_shard=2) as w:
        for i in range(4):
            w.add(make_record(i))
    good = shard_files(tmp_path)
    assert len(good) == 2
    good[0].write_bytes(content)  # a disk-full copy: the first bytes of a shard
    return good[0], good[1]


@pytest.mark.parametrize("content", [b"PAR1xyz", b"not parquet at all", None])
def test_an_unreadable_shard_is_named_then_quarantined_and_the_good_rows_kept(tmp_path, content):
    from drllm.shards import QUARANTINE_DIR, UnreadableShardError, quarantine_unreadable

    if content is None:  # a foreign Parquet file under a shard's name
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"x": [1, 2]}), sink)
        content = sink.getvalue().to_pybytes()
    bad, good = _with_a_bad_shard(tmp_path, content)
    for read in (read_shards, completed_example_ids, lambda d: read_shard_metadata(bad)):
        with pytest.raises(UnreadableShardError, match=rf"(?s){bad}.*moves such files to "
                                                        rf"{QUARANTINE_DIR}/"):
            read(tmp_path)
    moved = quarantine_unreadable(tmp_path)
    assert [(q.file, q.moved_to) for q in moved] == [(bad.name, f"{QUARANTINE_DIR}/{bad.name}")]
    assert (tmp_path / QUARANTINE_DIR / bad.name).read_bytes() == content
    assert shard_files(tmp_path) == [good]
    assert [e["file"] for e in read_manifest(tmp_path)] == [good.name]  # complete shards only
    assert completed_example_ids(tmp_path) == {"ex-2", "ex-3"}
    assert quarantine_unreadable(tmp_path) == []
    with open_writer(tmp_path) as w:  # a rerun writes the lost rows again
        for i in range(4):
            w.add(make_record(i))
        assert w.duplicates_skipped == 2
    assert sorted(read_shards(tmp_path).column("example_id").to_pylist()) == [
        f"ex-{i}" for i in range(4)]
    assert len(read_manifest(tmp_path)) == len(shard_files(tmp_path)) == 2
