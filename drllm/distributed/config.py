"""Frozen, validated configuration of the distributed search: generation, actor pool, driver.

These are Hydra structured configs as they stand (see :mod:`drllm.hydra_schema`): ``PoolConfig`` is the
``pool/`` group, ``DriverConfig`` the ``driver`` key, ``WorkAvoidance`` the ``work_avoidance`` key;
``GenerationConfig`` is derived from the dataset's budget and those levers
(:attr:`drllm.jobs.search.SearchJobSettings.generation`). Every value is checked
here, so a bad setting fails before Ray starts an actor.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from drllm.checks import check_bool, check_int, check_real


@dataclass(frozen=True, kw_only=True)
class WorkAvoidance:
    """The work-avoidance levers of an evaluation, all exact: the same tokens and rewards as a
    plain greedy generation along the same path (see :mod:`drllm.models.prefix` and
    :mod:`drllm.models.resume`). On by default except ``draft`` (and so ``draft_pool``); the
    ``work_avoidance`` key of the search job.

    Attributes:
        reuse_prefix: per question, keep the default path's states entering every block and
            its KV over prompt + default response; an edited path starts at its first edited
            block and reuses the blocks before it.
        draft: verify the default response as a draft, teacher-forced in one pass along the
            edited path; decoding only continues after the first disagreement (needs
            ``reuse_prefix``). Off by default: on SmolLM2 it costs more than it saves at the
            search job's batching (README, *Benchmarks*: ``search-work``); worth trying on
            models whose edited paths keep the default wording.
        draft_tokens: draft tokens verified at most (``None``: the whole default response
            until the question's verifications show fewer are accepted, see
            :meth:`drllm.models.prefix.PrefixEntry.draft_length`).
        reuse_paths: also keep edited paths' states over the prompt, so a later path that
            shares more leading blocks with one of them (a child of that node) than with the
            default path starts there (needs ``reuse_prefix``).
        paths_per_question: edited paths' states kept per question at most (least recently
            used out; the cache drops them before whole questions when it is full).
        draft_pool: after an edited path first disagrees with the default response, later
            decode steps verify drafts taken from the responses other paths of the question
            gave (needs ``draft``; :mod:`drllm.models.drafts`).
        grader_stop: a row stops once its grader declares that no continuation can change the
            verdict (:meth:`drllm.rewards.Grader.verdict_final`); the stored response is then
            the shorter text, graded the same.
        prefix_cache_mb: memory of the per-evaluator prefix cache (MiB; edited paths'
            states, then least recently used questions out; sizes per question and path:
            README, *Benchmarks*).
        max_batch_tokens: the evaluator engine's token budget per step (running rows count
            one each, rows being prefilled their prompt tokens; :mod:`drllm.engine`).
        max_rows: rows the engine runs at once at most.
        prefill_chunk: prompts longer than this are prefilled in chunks of it, one per step.

    The last three schedule the engine; they change speed and memory, never tokens.
    """

    reuse_prefix: bool = True
    draft: bool = False
    draft_tokens: Optional[int] = None
    draft_pool: bool = True
    reuse_paths: bool = True
    paths_per_question: int = 8
    grader_stop: bool = True
    prefix_cache_mb: float = 1024.0
    max_batch_tokens: int = 4096
    max_rows: int = 64
    prefill_chunk: int = 1024

    def __post_init__(self) -> None:
        for name in ("reuse_prefix", "draft", "draft_pool", "reuse_paths", "grader_stop"):
            check_bool(type(self).__name__, name, getattr(self, name))
        if self.draft_tokens is not None:
            check_int(type(self).__name__, "draft_tokens", self.draft_tokens, 1)
        check_int(type(self).__name__, "paths_per_question", self.paths_per_question, 1)
        check_real(type(self).__name__, "prefix_cache_mb", self.prefix_cache_mb, 0.0)
        for name in ("max_batch_tokens", "max_rows", "prefill_chunk"):
            check_int(type(self).__name__, name, getattr(self, name), 1)

    @property
    def levers(self) -> dict:
        """The levers as keyword arguments (``GenerationConfig(**levers, ...)``)."""
        return {f.name: getattr(self, f.name) for f in fields(WorkAvoidance)}


@dataclass(frozen=True)
class GenerationConfig(WorkAvoidance):
    """How each evaluation generates along its path (greedy decoding): the budget, plus the
    :class:`WorkAvoidance` levers it inherits (keyword-only: ``GenerationConfig(16, ["\\n"],
    draft=False)``).

    Attributes:
        max_new_tokens: generated tokens per evaluation at most.
        stop_strings: generation of a row stops once its text contains one of these.
        min_plausibility: the plausibility guard (:class:`drllm.rewards.PlausibilityGuard`):
            an edited path's accepted response whose mean token log-likelihood under the
            default path is below this (nats per token) gets reward 0; None: scores are
            recorded but nothing is rejected.
        loglik_norm: log-likelihood choices rank by log-likelihood per character (lm-eval
            ``acc_norm``) instead of the sum (``acc``).
    """

    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()
    min_plausibility: float | None = None
    loglik_norm: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("GenerationConfig", "max_new_tokens", self.max_new_tokens, 1)
        from drllm.rewards.plausibility import PlausibilityGuard

        PlausibilityGuard(self.min_plausibility)  # validates
        if isinstance(self.stop_strings, str):
            raise ValueError(
                "GenerationConfig.stop_strings must be a list of strings, not one string "
                f"({self.stop_strings!r}); write [{self.stop_strings!r}]"
            )
        stops = tuple(self.stop_strings)
        bad = [s for s in stops if not isinstance(s, str) or not s]
        if bad:
            raise ValueError(f"GenerationConfig.stop_strings must be non-empty strings, got {bad}")
        object.__setattr__(self, "stop_strings", stops)


@dataclass(frozen=True)
class PoolConfig:
    """Evaluator actors: how many, their resources, the requests they hold, fault tolerance.

    Attributes:
        num_actors: evaluator actors. ``None``: one per GPU when GPUs are used, otherwise
            ``floor(cluster CPUs / num_cpus_per_actor)`` (at least 1).
        num_cpus_per_actor: CPUs reserved per actor; on CPU this is also the number of torch
            threads the actor uses (Ray sets ``OMP_NUM_THREADS`` from it).
        use_gpu: ``None``: use GPUs when the cluster has them; ``True``: require GPUs (fails
            fast on a CPU-only cluster); ``False``: never ask for GPUs.
        num_gpus_per_actor: GPUs reserved per actor when GPUs are used (1: one actor per GPU).
        requests_per_actor: requests an actor holds at most (sent, not yet answered: its
            engine's waiting and running rows). Requests stream: each joins the actor's running
            engine at its next step and is answered as soon as it finishes, and the pool sends
            another in its place, so this only needs to exceed what the engine's budget runs
            at once (``work_avoidance.max_rows``, 64) for the engine to stay full.
        max_restarts: times Ray restarts a dead actor before it is given up.
        max_request_retries: times a request whose evaluation raised is retried before it is
            recorded as reward 0 with the error as reason.
        namespace: Ray namespace of the named actors.
        name_prefix: actors are named ``{name_prefix}-{index}``.
        min_actors: actors that must be up before the search starts (``None``: 1); the
            others join as they are placed and load the model.
        max_actors: actors requested at most. ``None``: ``num_actors`` when set, otherwise as
            many as the cluster's resources hold, re-checked every ``scale_check_s`` so the
            pool grows while the autoscaler (or KubeRay) adds nodes. Set it on an autoscaling
            cluster: the pending actors are the demand that makes the autoscaler add nodes.
        scale_check_s: how often the pool looks for new nodes and placed actors (seconds).
        gpu_wait_s: a GPU pool that has no actor placed and loaded after this long fails
            with an error naming the missing GPUs (seconds); GPUs are never replaced by CPUs.
        call_timeout_s: an actor holding requests that answers none of them for this long
            is hung: it is killed (Ray restarts it) and its requests go to another (seconds).
        sticky: send a question's requests to the actor that last served it (its per-question
            caches stay warm; a request waits while that actor is full) while it is alive.
    """

    num_actors: Optional[int] = None
    num_cpus_per_actor: float = 1
    use_gpu: Optional[bool] = None
    num_gpus_per_actor: float = 1.0
    requests_per_actor: int = 128
    max_restarts: int = 3
    max_request_retries: int = 2
    namespace: str = "drllm"
    name_prefix: str = "drllm-evaluator"
    min_actors: Optional[int] = None
    max_actors: Optional[int] = None
    scale_check_s: float = 10.0
    gpu_wait_s: float = 600.0
    call_timeout_s: float = 600.0
    sticky: bool = True

    def __post_init__(self) -> None:
        owner = "PoolConfig"
        self._check_elastic(owner)
        if self.num_actors is not None:
            check_int(owner, "num_actors", self.num_actors, 1)
        check_real(owner, "num_cpus_per_actor", self.num_cpus_per_actor, 0.0)
        check_real(owner, "num_gpus_per_actor", self.num_gpus_per_actor, 0.0, open_low=True)
        check_bool(owner, "use_gpu", self.use_gpu, optional=True)
        check_int(owner, "requests_per_actor", self.requests_per_actor, 1)
        check_int(owner, "max_restarts", self.max_restarts, 0)
        check_int(owner, "max_request_retries", self.max_request_retries, 0)
        for name in ("namespace", "name_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{owner}.{name} must be a non-empty string, got {value!r}")

    def _check_elastic(self, owner: str) -> None:
        for name in ("min_actors", "max_actors"):
            if getattr(self, name) is not None:
                check_int(owner, name, getattr(self, name), 1)
        for name in ("scale_check_s", "gpu_wait_s", "call_timeout_s"):
            check_real(owner, name, getattr(self, name), 0.0, open_low=True)
        check_bool(owner, "sticky", self.sticky)
        low, high = self.actor_bounds
        if high is not None and low > high:
            raise ValueError(f"{owner}: min_actors ({low}) exceeds the actors asked at most "
                             f"({high}); raise max_actors / num_actors or lower min_actors")

    @property
    def actor_bounds(self) -> tuple[int, Optional[int]]:
        """``(actors needed to start, actors at most or None: what the cluster holds)``."""
        high = self.max_actors if self.max_actors is not None else self.num_actors
        return (self.min_actors or 1), high

    @property
    def threads_per_actor(self) -> int:
        """torch threads each CPU actor uses: ``num_cpus_per_actor`` rounded down, at least 1."""
        return max(1, int(self.num_cpus_per_actor))


@dataclass(frozen=True)
class DriverConfig:
    """The central MCTS driver.

    Attributes:
        max_concurrent_trees: searches (one per example) in progress at once.
        max_pending_per_tree: paths one tree may have out for evaluation at once. 1 (default)
            is the paper's sequential MCTS: each tree's search is then independent of timing
            and batching, so results are reproducible; more trades search quality for
            parallelism when there are fewer examples than pool slots.
        seed_per_example: derive each tree's RNG seed from the MCTS seed and the example id
            (decorrelates trees; stable across resumes). ``False``: every tree uses the seed.
        poll_interval_s: longest the driver blocks waiting for results before it refreshes
            the progress bar and flushes due shards (seconds).
    """

    max_concurrent_trees: int = 64
    max_pending_per_tree: int = 1
    seed_per_example: bool = True
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        check_int("DriverConfig", "max_concurrent_trees", self.max_concurrent_trees, 1)
        check_int("DriverConfig", "max_pending_per_tree", self.max_pending_per_tree, 1)
        check_real("DriverConfig", "poll_interval_s", self.poll_interval_s, 0.0, open_low=True)
        check_bool("DriverConfig", "seed_per_example", self.seed_per_example)
