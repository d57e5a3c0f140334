"""`python -m drllm.jobs.search` end to end through Hydra, with a tiny model saved to disk:
multirun (one output dir per run, one Ray instance), summary.json, shards, resume, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drllm.shards import read_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


def _search(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "drllm.jobs.search", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _common(tiny_dir: Path) -> list[str]:
    return [
        f"model.name={tiny_dir}", "dataset.num_examples=3", "search.num_simulations=4",
        "dataset.max_new_tokens=3", "pool.num_actors=1", "ray.num_cpus=2", "progress=false",
    ]


@pytest.mark.slow
def test_multirun_writes_one_dir_per_run_and_reruns_resume(tiny_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = _search(["-m", *_common(tiny_dir), "dataset.seed=0,1", f"hydra.sweep.dir={sweep}",
                    "hydra.sweep.subdir=seed${dataset.seed}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr  # Hydra sends job logs to stdout
    # One Ray instance for the whole sweep: the second job reuses it.
    assert log.count("starting a local Ray instance") == 1, log[-4000:]
    assert "reusing the Ray instance" in log
    for seed in (0, 1):
        run_dir = sweep / f"seed{seed}"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["examples"] == 3 and summary["this_run"]["searched"] == 3
        assert 0.0 <= summary["default_accuracy"] <= summary["search_accuracy"] <= 1.0
        table = read_shards(run_dir / "shards")
        assert sorted(table.column("example_id").to_pylist()) == sorted(set(table.column("example_id").to_pylist()))
        assert table.num_rows == 3 and set(table.column("num_layers").to_pylist()) == {4}
        # The run directory describes itself: its dataset card loads the shards.
        import datasets
        card = datasets.load_dataset(str(run_dir), cache_dir=str(tmp_path / "hf"))["train"]
        assert sorted(card["example_id"]) == sorted(table.column("example_id").to_pylist())
        assert "examples: 3" in (run_dir / "README.md").read_text()
    ids = [set(read_shards(sweep / f"seed{s}" / "shards").column("example_id").to_pylist()) for s in (0, 1)]
    assert ids[0] != ids[1], "different dataset seeds must sample different examples"

    # Rerunning one run's config in its directory searches nothing new.
    rerun = _search([*_common(tiny_dir), "dataset.seed=0", f"hydra.run.dir={sweep / 'seed0'}"])
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    summary = json.loads((sweep / "seed0" / "summary.json").read_text())
    assert summary["this_run"]["searched"] == 0 and summary["this_run"]["skipped_done"] == 3
    assert summary["examples"] == 3
    assert read_shards(sweep / "seed0" / "shards").num_rows == 3
    for key in ("solved_fraction", "label_shares", "evaluations_per_example",
                "accuracy_by_grader", "evaluated_depth_hist", "layers_saved_solved_hist"):
        assert key in summary, key

    # Another search-affecting config in the same directory is refused before Ray starts,
    # naming the key; more examples of the same config are not a conflict.
    other = _search([*_common(tiny_dir), "dataset.seed=0", "search.num_simulations=5",
                     f"hydra.run.dir={sweep / 'seed0'}"], timeout=120)
    assert other.returncode != 0
    assert "search.num_simulations: 4 -> 5" in other.stderr and "resume=force" in other.stderr
    assert "starting a local Ray" not in other.stdout + other.stderr
    assert read_shards(sweep / "seed0" / "shards").num_rows == 3


def test_bad_value_fails_before_ray_starts(tiny_dir: Path, tmp_path: Path) -> None:
    proc = _search([*_common(tiny_dir), "search.epsilon=1.5", f"hydra.run.dir={tmp_path}"], timeout=120)
    assert proc.returncode != 0
    assert "epsilon" in proc.stderr
    assert "starting a local Ray" not in proc.stdout + proc.stderr
    assert not (tmp_path / "shards").exists()


@pytest.mark.slow
def test_sigterm_writes_finished_rows_and_a_rerun_completes(tiny_dir: Path, tmp_path: Path) -> None:
    """``ray job stop`` sends SIGTERM: rows finished before it must be on disk (not lost in the
    writer's buffer), and a rerun searches only the rest."""
    # Two trees at a time, so the search is still going when the first row is finished.
    args = [*_common(tiny_dir), "dataset.num_examples=12", "driver.max_concurrent_trees=2",
            "output.flush_seconds=3600",
            "output.rows_per_shard=1000", "log_level=DEBUG", f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "drllm.jobs.search", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:  # Hydra sends job logs to stdout
            lines.append(line)
            if "drllm.distributed.driver" in line and "finished " in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, log[-4000:]
    assert "writing finished rows" in log
    assert not (tmp_path / "summary.json").exists()
    files = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert any(f.startswith("shard-") for f in files), (files, log[-6000:])
    written = read_shards(tmp_path / "shards").column("example_id").to_pylist()
    assert 1 <= len(written) < 12 and len(set(written)) == len(written), log[-4000:]

    rerun = _search(args)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["this_run"]["skipped_done"] == len(written)
    assert summary["this_run"]["searched"] == 12 - len(written)
    ids = read_shards(tmp_path / "shards").column("example_id").to_pylist()
    assert len(ids) == 12 == len(set(ids)) and set(written) <= set(ids)


def test_a_second_driver_on_the_same_directory_refuses_before_ray_starts(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """While a live driver holds the shards directory, another one names it and stops."""
    from drllm.shards import OutputLock

    with OutputLock(tmp_path / "shards", heartbeat_s=0):
        proc = _search([*_common(tiny_dir), f"hydra.run.dir={tmp_path}"], timeout=120)
    assert proc.returncode != 0
    assert "output directory in use" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert "starting a local Ray" not in proc.stdout + proc.stderr
    assert not list((tmp_path / "shards").glob("*.parquet"))
