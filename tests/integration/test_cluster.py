"""The search on real multi-node local Ray clusters.

* a ``ray.cluster_utils.Cluster`` (3 nodes, one removed mid-run);
* an autoscaling cluster (Ray's fake multi-node provider) whose GPU nodes join while the
  search runs;
* ``ray start --head`` + ``ray job submit`` with jobs/runtime_env.yaml (jobs/README.md);
* ``ray start --head`` + two sharded search drivers at once (``dataset.shard=k/2``).

Every Ray driver runs in a subprocess, so the session's ``ray_local`` instance stays untouched
(a process holds one Ray connection). Each cluster is torn down in ``finally`` and stops only
its own processes (``Cluster.shutdown``; for the ``ray start`` heads, see ``_RayHead``), never
``ray stop``: other Ray instances may share the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drllm.shards import read_shards

REPO = Path(__file__).resolve().parents[2]

NODE_REMOVAL = textwrap.dedent('''
    import json, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    from drllm.distributed import DriverConfig, EvaluationPool, EvaluatorSpec, PoolConfig, SearchDriver
    from drllm.search import MCTSConfig
    from drllm.shards import ShardWriter, duplicates_dropped, read_shards
    from drllm.testing import DummyEvaluator
    from drllm.types import Example

    out, L, N = sys.argv[1], 6, 16
    examples = [Example(id=f"q{i}", dataset="toy", split="train", prompt=f"{i}+1?",
                        messages=({"role": "user", "content": f"{i}+1?"},), gold=str(i + 1),
                        grader="exact") for i in range(N)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    report = {}
    try:
        keep = cluster.add_node(num_cpus=2)
        doomed = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, namespace="nodes", log_to_driver=False)
        spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "delay_s": 0.25})
        # GPUs asked on a cluster without any: a clear error within gpu_wait_s, no CPU fallback
        t0 = time.monotonic()
        try:
            EvaluationPool.create(spec, PoolConfig(use_gpu=True, gpu_wait_s=3, name_prefix="gpu"))
        except TimeoutError as err:
            report["gpu_error"] = str(err)
        report["gpu_wait_s"] = time.monotonic() - t0
        pool = EvaluationPool.create(spec, PoolConfig(num_actors=4, requests_per_actor=2, max_restarts=3,
                                            scale_check_s=0.5, name_prefix="nodes"))
        # which workers the doomed node holds (2 CPUs, 1 CPU per actor: two of the four)
        node_of = ray.get([a.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()) for a in pool.transport.actors])
        doomed_workers = {w for w, node in enumerate(node_of) if node == doomed.node_id}
        report["doomed_workers"] = len(doomed_workers)
        removed = []
        writer = ShardWriter(out, writer_id="w0", num_layers=L, model_id="dummy", config={},
                             rows_per_shard=4)
        dispatch = pool.dispatch

        def dispatch_then_remove():
            # Remove the node once 3 rows are written and right after requests went to one of
            # its actors (each takes 2 x 0.25 s), so they die mid-call: a removal timed by the
            # sink alone found the doomed actors idle in 1 of ~8 runs (their answers just in).
            sent = dispatch()
            held = sum(pool._held.get(w, 0) for w in doomed_workers)
            if not removed and writer.rows_written + writer.buffered >= 3 and held:
                removed.append(time.monotonic())
                report["held_by_doomed"] = held
                cluster.remove_node(doomed, allow_graceful=False)  # its actors die mid-call
                cluster.add_node(num_cpus=2)  # where they are placed again
            return sent
        pool.dispatch = dispatch_then_remove
        driver = SearchDriver(pool, MCTSConfig(num_simulations=8, seed=1),
                              DriverConfig(max_concurrent_trees=N), sink=writer,
                              render=lambda ex: ex.prompt, progress=False)
        summary = driver.run(examples)
        writer.close()
        report["ready_at_end"] = pool.workers_alive
        pool.close()
        table = read_shards(out)
        report.update(ids=sorted(table.column("example_id").to_pylist()),
                      duplicates=duplicates_dropped(table), lost=summary.worker_losses,
                      requeued=summary.requeued, removed=bool(removed))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("REPORT " + json.dumps(report))
''')


def _run(script: str, *args: str, timeout: float = 240) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("REPORT "):])


@pytest.mark.slow
def test_node_removed_mid_run_loses_nothing_and_gpus_are_never_faked(tmp_path):
    report = _run(NODE_REMOVAL, str(tmp_path / "shards"))
    assert report["doomed_workers"] == 2 and report["removed"] and report["held_by_doomed"] >= 1
    assert report["lost"] >= 1 and report["requeued"] >= 1
    assert report["ids"] == sorted(f"q{i}" for i in range(16))  # every example written once
    assert report["duplicates"] == 0
    assert report["ready_at_end"] >= 2  # the survivors (restarted actors may still be loading)
    assert "no GPU evaluator actor" in report["gpu_error"] and "pool.gpu_wait_s" in report[
        "gpu_error"]
    assert 3 <= report["gpu_wait_s"] < 30


# --------------------------------------------------------------------------- own Ray heads
#
# The two tests below start Ray heads with the `ray` CLI (as a cluster is started in
# production). Other Ray instances share this machine, so nothing here may touch them: no
# `ray stop` (it stops every Ray process on the machine -- AutoscalingCluster.start/shutdown
# call `ray stop --force`), no fixed default ports, no files in the shared default temp dir
# /tmp/ray. Each head gets its own --temp-dir (short, under /tmp: Ray's Unix socket paths
# <temp>/session_*/sockets/plasma_store must stay under 107 bytes, which a pytest tmp_path
# does not) and its own free ports; teardown kills exactly the processes of that head: every
# process whose command line names its temp dir (gcs_server, raylets -- the fake provider's
# worker nodes use the head's temp dir too --, dashboard, agents, monitor, log monitor) or its
# GCS port (the Ray client server), plus all their descendants (workers and actors, whose
# titles Ray rewrites; a job's entrypoint).


def _free_ports(count: int) -> list[int]:
    import socket

    socks = []
    try:
        for _ in range(count):  # held open together: distinct ports
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _head_processes(temp_dir: str, gcs_port: int) -> list:
    import psutil

    def ours(args: list[str]) -> bool:
        return any(temp_dir in a or a.endswith(f":{gcs_port}") for a in args)

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if ours(proc.info["cmdline"] or []):
                found[proc.pid] = proc
        except psutil.Error:
            pass
    for proc in list(found.values()):
        try:
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.Error:
            pass
    return [p for p in found.values() if p.pid != os.getpid()]


def _kill_head(temp_dir: str, gcs_port: int) -> list[str]:
    """Terminate (then kill) this head's processes; what is still alive afterwards."""
    import psutil

    for _ in range(5):  # a raylet may start a worker while its siblings go down: repeat
        procs = _head_processes(temp_dir, gcs_port)
        if not procs:
            break
        for proc in procs:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    left = []
    for proc in _head_processes(temp_dir, gcs_port):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            pass
    return left


class _RayHead:
    """``ray start --head`` with its own temp dir and ports; :meth:`stop` kills only it."""

    def __init__(self, *, num_cpus: int, env: dict, extra: tuple[str, ...] = (),
                 dashboard: bool = False) -> None:
        import tempfile

        self.temp_dir = tempfile.mkdtemp(prefix="drllm-ray-", dir="/tmp")
        (self.gcs_port, self.dashboard_port, self.client_port, self.agent_port,
         self.agent_grpc_port, self.metrics_port, self.env_agent_port) = _free_ports(7)
        self.env = env
        self.cmd = [
            str(Path(sys.executable).with_name("ray")), "start", "--head",
            f"--temp-dir={self.temp_dir}", f"--port={self.gcs_port}",
            f"--num-cpus={num_cpus}", "--num-gpus=0", "--object-store-memory=100000000",
            f"--include-dashboard={'true' if dashboard else 'false'}",
            f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-agent-listen-port={self.agent_port}",
            f"--dashboard-agent-grpc-port={self.agent_grpc_port}",
            f"--metrics-export-port={self.metrics_port}",
            f"--runtime-env-agent-port={self.env_agent_port}",
            "--disable-usage-stats", *extra,
        ]

    @property
    def address(self) -> str:
        from ray._private.services import get_node_ip_address

        return f"{get_node_ip_address()}:{self.gcs_port}"

    def start(self) -> None:
        proc = subprocess.run(self.cmd, cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def stop(self) -> list[str]:
        import shutil

        left = _kill_head(self.temp_dir, self.gcs_port)
        if not left:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


def _head_env(**extra: str) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false",
           # `python` of a job's entrypoint and the `ray` CLI: this environment's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           **extra}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "PYTHONPATH"):
        if name not in extra:
            env.pop(name, None)
    return env


AUTOSCALED = textwrap.dedent('''
    import json, sys, time
    import ray
    from drllm.distributed import (DriverConfig, EvaluationPool, EvaluatorSpec, PoolConfig,
                                   search_examples)
    from drllm.search import MCTSConfig
    from drllm.shards import ShardWriter, duplicates_dropped, read_shards
    from drllm.testing import DummyEvaluator
    from drllm.testing.evaluators import ConstantReward
    from drllm.types import Example

    address, out, max_actors = sys.argv[1], sys.argv[2], int(sys.argv[3])
    L, N = 6, 16
    examples = [Example(id=f"q{i}", dataset="toy", split="train", prompt=f"{i}+1?",
                        messages=({"role": "user", "content": f"{i}+1?"},), gold=str(i + 1),
                        grader="exact") for i in range(N)]
    ray.init(address=address, namespace="autoscale", log_to_driver=False)
    alive = lambda: [n for n in ray.nodes() if n["Alive"]]
    report = {"nodes_before": len(alive()), "gpus_before": ray.cluster_resources().get("GPU", 0)}
    pools = []

    class Sink(ShardWriter):
        def add(self, record):
            super().add(record)
            report.setdefault("ready_seen", []).append(pools[0].workers_alive)
        def close(self):  # before the pool closes
            report["ready_at_end"] = pools[0].workers_alive
            super().close()

    # Zero reward: no tree stops early, so the run lasts N x 8 evaluations (~40 actor-seconds)
    # -- long enough for the autoscaler to bring up the other nodes while it runs.
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "delay_s": 0.3,
                                          "reward_fn": ConstantReward(0.0)})
    t0 = time.monotonic()
    pools.append(EvaluationPool.create(spec, PoolConfig(
        use_gpu=True, num_gpus_per_actor=1, num_cpus_per_actor=1, max_actors=max_actors,
        min_actors=1, requests_per_actor=4, scale_check_s=0.5, gpu_wait_s=90,
        name_prefix="autoscale")))
    report["ready_at_start"] = pools[0].workers_alive
    report["requested_at_start"] = pools[0].transport.num_workers
    report["nodes_at_start"] = len(alive())
    try:
        with Sink(out, writer_id="w0", num_layers=pools[0].info.num_layers,
                  model_id=pools[0].info.model_id, config={}, rows_per_shard=4) as sink:
            summary = search_examples(
                pools[0], examples, sink, render=lambda ex: ex.prompt,
                mcts_config=MCTSConfig(num_simulations=8, seed=1),
                driver_config=DriverConfig(max_concurrent_trees=N), progress=False)
    finally:
        pools[0].close()
    table = read_shards(out)
    report.update(seconds=time.monotonic() - t0, nodes_after=len(alive()),
                  gpus_after=ray.cluster_resources().get("GPU", 0),
                  ids=sorted(table.column("example_id").to_pylist()),
                  duplicates=duplicates_dropped(table), searched=summary.searched,
                  evaluations=summary.evaluations, failed=summary.failed_evaluations,
                  gone=summary.workers_gone)
    ray.shutdown()
    print("REPORT " + json.dumps(report))
''')


def _fake_autoscaling_config(gcs_address: str, max_workers: int) -> dict:
    """The cluster config ``AutoscalingCluster`` generates (its ``example.yaml`` base, which the
    Ray 2.60 wheel does not ship, written out here): a resourceless head and fake "GPU" worker
    nodes (1 CPU, 1 GPU each; Ray only counts the GPU, the dummy backend never touches CUDA),
    0 to ``max_workers`` of them, started by the fake provider as raylet processes on this
    machine. ``gcs_address`` makes them join this head (the fake provider's default is port
    6379, which another cluster may hold)."""
    return {
        "cluster_name": f"drllm-fake-{os.getpid()}",
        "max_workers": max_workers,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs_address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0, "GPU": 0}, "node_config": {},
                                 "max_workers": 0},
            "fake.gpu": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": 100 * 2**20},
                         "node_config": {}, "min_workers": 0, "max_workers": max_workers},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 5, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


@pytest.mark.slow
def test_pool_grows_while_the_autoscaler_adds_gpu_nodes(tmp_path):
    """An autoscaling cluster (Ray's fake multi-node provider, what
    ``ray.cluster_utils.AutoscalingCluster`` runs) that starts with no worker node: the head
    has no CPU and no GPU, worker nodes carry fake GPUs. The search (``pool.use_gpu=true``,
    ``pool.max_actors=3``) asks for 3 GPU actors at once; the pending ones are the demand that
    makes the autoscaler add nodes one by one, the search starts once the first actor is up
    and uses the others as their nodes join. Every example is written exactly once.

    ``AutoscalingCluster`` itself is not used: its ``start``/``shutdown`` run ``ray stop
    --force`` (every Ray process on the machine) and its constructor reads an ``example.yaml``
    that the 2.60 wheel lacks. The test does what its ``start`` does --
    ``RAY_FAKE_CLUSTER=1 AUTOSCALER_UPDATE_INTERVAL_S=1 ray start --head
    --autoscaling-config=...`` -- on its own temp dir and ports, and kills only that cluster's
    processes (the fake worker nodes included) in ``finally``.
    """
    max_actors = 3
    config_file = tmp_path / "autoscaling.json"
    head = _RayHead(num_cpus=0, env=_head_env(
        RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", PYTHONPATH=str(REPO)),
        extra=(f"--autoscaling-config={config_file}",))
    config_file.write_text(json.dumps(_fake_autoscaling_config(head.address, max_actors)))
    left = ["(not torn down)"]
    try:
        head.start()
        report = _run(AUTOSCALED, head.address, str(tmp_path / "shards"), str(max_actors),
                      timeout=240)
    finally:
        left = head.stop()
    assert not left, f"processes of the test's cluster survived its teardown: {left}"
    assert report["nodes_before"] == 1 and report["gpus_before"] == 0  # the head alone
    assert report["requested_at_start"] == max_actors  # all asked up front: the demand
    assert report["ready_at_start"] < max(report["ready_seen"])  # the pool grew ...
    assert report["ready_at_start"] < report["ready_at_end"]  # ... and kept its actors
    assert report["nodes_after"] >= 1 + report["ready_at_end"]  # on nodes the autoscaler added
    assert report["gpus_after"] == report["nodes_after"] - 1
    assert report["ids"] == sorted(f"q{i}" for i in range(16))  # every example written once
    assert report["duplicates"] == 0
    assert report["searched"] == 16 and report["failed"] == 0 and report["gone"] == 0


def _http_status(url: str, token: str | None = None) -> int:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return -1


@pytest.mark.slow
def test_ray_job_submit_runs_the_search_with_the_jobs_runtime_env(tmp_path):
    """The Ray Jobs path of jobs/README.md: ``ray start --head`` (token auth on, as Ray 2.60
    makes it for new clusters; the token given as ``RAY_AUTH_TOKEN`` on both sides, so nothing
    is written to ``~/.ray``), then ``ray job submit --address http://127.0.0.1:<dashboard>
    --runtime-env <spec> -- python -m drllm.jobs.search ray=auto pool=auto ...`` with a tiny
    model saved to disk; the job's shards and summary.json are checked.

    The spec is jobs/runtime_env.yaml with only its ``pip`` field removed: the test asserts
    that the file is the README's spec, then submits it without ``pip`` because the
    dependencies are already in the head's Python, and with ``pip`` Ray would build a
    virtualenv for the job by cloning this one (a virtualenv is cloned, GBs, minutes) and run
    pip against the package index. ``working_dir: .`` (and the excludes, ``env_vars``) stay,
    so the package travels as in production: the test checks that the job ran from Ray's
    unpacked copy of it, not from this checkout.
    """
    import secrets

    import yaml

    from drllm.models.tiny import tiny_model, tiny_tokenizer

    readme = (REPO / "jobs" / "README.md").read_text()
    assert "--runtime-env jobs/runtime_env.yaml" in readme
    assert "-- python -m drllm.jobs.search ray=auto pool=auto" in readme
    spec = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    assert set(spec) == {"working_dir", "excludes", "pip", "env_vars"}
    assert spec["working_dir"] == "." and ".venv" in spec["excludes"]
    assert "HF_TOKEN" in spec["env_vars"] and spec["pip"]["packages"]
    submitted = {k: v for k, v in spec.items() if k != "pip"}
    spec_file = tmp_path / "runtime_env.yaml"
    spec_file.write_text(yaml.safe_dump(submitted))

    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama", num_layers=4).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    run_dir = tmp_path / "run"

    token = secrets.token_hex(32)
    home_token = Path.home() / ".ray" / "auth_token"
    had_home_token = home_token.exists()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head = _RayHead(num_cpus=2, env=_head_env(**auth), dashboard=True)
    left = ["(not torn down)"]
    try:
        head.start()
        jobs_api = f"http://127.0.0.1:{head.dashboard_port}/api/jobs/"
        deadline = time.monotonic() + 90
        while _http_status(jobs_api, token) != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert _http_status(jobs_api, token) == 200, "the head's Jobs API never answered"
        assert _http_status(jobs_api) == 401  # token auth is on: no token, no entry
        submit = [
            str(Path(sys.executable).with_name("ray")), "job", "submit",
            "--address", f"http://127.0.0.1:{head.dashboard_port}",
            "--runtime-env", str(spec_file), "--submission-id", f"drllm-test-{os.getpid()}",
            "--", "python", "-m", "drllm.jobs.search", "ray=auto", "pool=auto",
            "pool.use_gpu=false", f"model.name={model_dir}", "dataset=synthetic_arith",
            "search=quick", "search.num_simulations=4", "dataset.num_examples=3",
            "dataset.max_new_tokens=3", "pool.num_actors=1", "progress=false",
            f"hydra.run.dir={run_dir}",
        ]
        job = subprocess.run(submit, cwd=REPO, env=_head_env(**auth), capture_output=True,
                             text=True, timeout=300)
    finally:
        left = head.stop()
    assert not left, f"processes of the test's head survived its teardown: {left}"
    assert had_home_token or not home_token.exists(), "the test wrote ~/.ray/auth_token"
    log = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in log, log[-6000:]

    table = read_shards(run_dir / "shards")
    ids = table.column("example_id").to_pylist()
    assert table.num_rows == 3 and len(set(ids)) == 3
    assert set(table.column("num_layers").to_pylist()) == {4}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["examples"] == 3 and summary["this_run"]["searched"] == 3
    assert 0.0 <= summary["default_accuracy"] <= summary["search_accuracy"] <= 1.0
    # The entrypoint ran in Ray's unpacked working_dir package, not in this checkout.
    hydra_cfg = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    job_cwd = hydra_cfg["runtime"]["cwd"]
    assert job_cwd.startswith(head.temp_dir) and "/working_dir_files/_ray_pkg_" in job_cwd, job_cwd
    sources = [s["path"] for s in hydra_cfg["runtime"]["config_sources"]
               if s["provider"] == "main"]
    assert sources and sources[0].startswith(job_cwd), sources


@pytest.mark.slow
def test_two_shard_drivers_at_once_on_one_cluster(tmp_path):
    """A sharded search as jobs/README.md runs it: ``ray start --head``, then two
    ``python -m drllm.jobs.search ray=auto dataset.shard=k/2`` drivers at once (tiny model),
    each in its own ``shard-k-of-2`` directory (its own lock, seen held at the same time)
    with its own actors; the parts are disjoint, cover the sample, read back as one dataset
    and merge into one report; rerunning a shard resumes it."""
    import glob as globbing

    import duckdb
    import pandas as pd
    import pyarrow.dataset as pads

    from drllm.data.sharding import shard_of
    from drllm.merged_report import merged_report
    from drllm.models.tiny import tiny_model, tiny_tokenizer

    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama", num_layers=4).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    run = tmp_path / "run"
    env = _head_env(PYTHONPATH=str(REPO))
    head = _RayHead(num_cpus=4, env=env)

    def driver(k: int) -> subprocess.Popen:
        args = [sys.executable, "-m", "drllm.jobs.search", "ray=auto",
                f"ray.address={head.address}", "pool.use_gpu=false", "pool.num_actors=1",
                f"model.name={model_dir}", "dataset.num_examples=6", "search.num_simulations=4",
                "dataset.max_new_tokens=3", "progress=false", f"dataset.shard={k}/2",
                f"hydra.run.dir='{run}" + "${drllm_shard:${dataset.shard}}'"]
        return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    locks = [run / f"shard-{k}-of-2" / "shards" / ".drllm-lock.json" for k in range(2)]
    procs: list[subprocess.Popen] = []
    both_locked = False
    try:
        head.start()
        procs = [driver(0), driver(1)]
        deadline = time.monotonic() + 400
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            both_locked = both_locked or all(lock.exists() for lock in locks)
            time.sleep(0.1)
        logs = [p.communicate(timeout=30)[0] for p in procs]
        resumed = driver(1)
        procs.append(resumed)
        resume_log = resumed.communicate(timeout=300)[0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        left = head.stop()
    assert not left, f"processes of the test's head survived its teardown: {left}"
    for k, (p, log) in enumerate(zip(procs[:2], logs)):
        assert p.returncode == 0, log[-5000:]
        # its own actors: two drivers' pools never wait for each other's actor names
        assert f"evaluator actor drllm-evaluator-shard-{k}-of-2-0 is up" in log, log[-5000:]
    assert resumed.returncode == 0, resume_log[-5000:]
    assert both_locked, "the two drivers never held their locks at the same time"

    summaries = [json.loads((run / f"shard-{k}-of-2" / "summary.json").read_text())
                 for k in range(2)]
    ids = [set(read_shards(run / f"shard-{k}-of-2" / "shards").column("example_id").to_pylist())
           for k in range(2)]
    assert len(ids[0]) + len(ids[1]) == 6 and not ids[0] & ids[1]
    for k in range(2):
        assert all(shard_of(i, 2) == k for i in ids[k])
        assert summaries[k]["shard"] == f"{k}/2" and summaries[k]["examples"] == len(ids[k])
    resumed_summary = json.loads((run / "shard-1-of-2" / "summary.json").read_text())
    assert resumed_summary["this_run"]["searched"] == 0
    assert resumed_summary["this_run"]["skipped_done"] == len(ids[1])

    # One dataset: the README's glob, through three of its readers.
    pattern = str(run / "shard-*-of-2" / "shards" / "shard-*.parquet")
    files = sorted(globbing.glob(pattern))
    assert pads.dataset(files, format="parquet").to_table().num_rows == 6
    assert sorted(pd.read_parquet(files)["example_id"]) == sorted(ids[0] | ids[1])
    con = duckdb.connect()
    try:
        assert con.execute(f"select count(distinct example_id) from read_parquet('{pattern}')"
                           ).fetchone()[0] == 6
    finally:
        con.close()
    merged = merged_report([str(run / "shard-*-of-2")])
    assert merged["examples"] == 6 and len(merged["parts"]) == 2
    assert merged["datasets"]["synthetic_arith"]["examples"] == 6
