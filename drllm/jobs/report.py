"""``python -m drllm.jobs.report``: one science report over the shards of several search runs.

Merges the runs of a sharded search (``dataset.shard=k/N``), or any runs of one model, into the
figures an unsharded run over the same examples reports (:mod:`drllm.merged_report`). Prints
the report table per dataset, then one JSON object as the last stdout line::

    python -m drllm.jobs.report 'outputs/search/<model>/<dataset>-<search>/shard-*-of-4'
    python -m drllm.jobs.report outputs/search/<model>/<dataset>-<search>      # finds its shard-k-of-N
    python -m drllm.jobs.report run_a run_b/shards --dataset gsm8k --out merged.json
    python -m drllm.jobs.report run_strict --against run_lenient   # labels changed by a reward
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from drllm.files import atomic_write_json
from drllm.merged_report import merged_report
from drllm.report import format_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m drllm.jobs.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+",
                        help="run directories, shards directories, or globs of them (quoted)")
    parser.add_argument("--dataset", default=None, help="report only this dataset")
    parser.add_argument("--against", nargs="+", default=(),
                        help="runs of the same questions to compare labels with (e.g. searched "
                             "under another reward): how many labels changed, verbatim samples")
    parser.add_argument("--out", default=None, help="also write the JSON report to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        report = merged_report(args.paths, dataset=args.dataset, against=args.against)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"report error: {err}")
    for name, science in report["datasets"].items():
        print(f"== {name} ({report['model']}, L={report['num_layers']}, "
              f"{len(report['parts'])} parts)")
        print(format_report(science))
    if args.out:
        atomic_write_json(Path(args.out), report)
    print(json.dumps(report, default=str, sort_keys=True))
    return report


if __name__ == "__main__":
    main()
