"""Benchmarks entry point: ``python -m drllm.jobs.bench <name> [options]``.

Progress goes to stderr (logging); the last stdout line is one JSON object with the results.
Each benchmark is a pair (add-arguments, run) in :data:`BENCHMARKS`; adding one is one entry.

Example::

    python -m drllm.jobs.bench executor --rows 16 --max-new-tokens 10 --data-root ../shared/data
    python -m drllm.jobs.bench search-work                       # levers on a recorded ARC search
    python -m drllm.jobs.bench driver                            # driver ceiling, instant evaluator
    python -m drllm.jobs.bench search-work --dataset gsm8k --max-new-tokens 256 --max-requests 48
    python -m drllm.jobs.bench gpu                               # engine vs HF generate, 1B-8B
    python -m drllm.jobs.bench search-engine --tasks arc_easy --num-examples 8   # engine vs calls
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from drllm.bench import driver as driver_bench
from drllm.bench import gpu as gpu_bench
from drllm.bench import search as search_bench
from drllm.bench import search_engine as search_engine_bench
from drllm.bench import search_work as search_work_bench
from drllm.bench import train as train_bench

logger = logging.getLogger(__name__)


def _executor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default="../shared/data",
                        help="folder holding ai2_arc/ARC-Easy/train.parquet (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=16, help="rows in the batch")
    parser.add_argument("--max-new-tokens", type=int, default=10)
    parser.add_argument("--skip-blocks", type=int, default=6,
                        help="blocks every row skips in the skip batch")
    parser.add_argument("--repeats", type=int, default=4, help="timed runs per measurement (best counts)")
    parser.add_argument("--seed", type=int, default=0)


def _executor(args: argparse.Namespace) -> dict[str, Any]:
    from drllm.bench.executor import run_executor_benchmark

    return run_executor_benchmark(
        data_root=args.data_root, num_rows=args.rows, max_new_tokens=args.max_new_tokens,
        skip_blocks=args.skip_blocks, repeats=args.repeats, seed=args.seed,
    )


#: name -> (add its arguments to a subparser, run it and return a JSON-able dict).
BENCHMARKS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                            Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "executor": (_executor_args, _executor),
    "driver": (driver_bench.add_arguments, driver_bench.run_from_args),
    "search": (search_bench.add_arguments, search_bench.run_from_args),
    "search-work": (search_work_bench.add_arguments, search_work_bench.run_from_args),
    "search-engine": (search_engine_bench.add_arguments, search_engine_bench.run_from_args),
    "gpu": (gpu_bench.add_arguments, gpu_bench.run_from_args),
    "train": (train_bench.add_arguments, train_bench.run_from_args),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m drllm.jobs.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (add_args, _) in BENCHMARKS.items():
        add_args(sub.add_parser(name))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = BENCHMARKS[args.benchmark][1](args)
    print(json.dumps(result, sort_keys=True), flush=True)
    return result


if __name__ == "__main__":
    main()
