"""``python -m drllm.jobs.analyze``: the paper's analyses of routed models, one JSON line each.

Each subcommand prints progress to stderr, writes its figure (``--out``, PNG) and prints one
JSON object as its last stdout line::

    python -m drllm.jobs.analyze alpha-sweep --results outputs/evaluate/<model>/<dataset>/results
    python -m drllm.jobs.analyze decisions   --results outputs/evaluate/<model>/<dataset>/results
    python -m drllm.jobs.analyze frontier    --results outputs/evaluate/<model>/<dataset>/results \
        [--out frontier.png] [--json frontier.json]
    python -m drllm.jobs.analyze throughput  --routers outputs/train/<model>/routers \\
        [--model smollm2-135m-instruct] [--dataset synthetic_arith] [--num-prompts 64] \\
        [--batch-sizes 1,2,4,8,16,32,64] [--max-new-tokens 16] [--alpha 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from drllm.data import DatasetConfig, load_examples
from drllm.data.prompts import render_prompt
from drllm.evaluation.analysis import alpha_sweep, decision_frequencies, throughput
from drllm.evaluation.frontier import frontier
from drllm.inference.routed import RoutedModel
from drllm.models.loading import ModelSpec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m drllm.jobs.analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fig in (("alpha-sweep", "alpha_sweep.png"), ("decisions", "decisions.png")):
        p = sub.add_parser(name)
        p.add_argument("--results", required=True, help="an evaluation's results directory")
        p.add_argument("--out", default=fig, help="figure path (PNG)")
    p = sub.add_parser("frontier")
    p.add_argument("--results", required=True, help="an evaluation's results directory")
    p.add_argument("--out", default="frontier.png", help="figure path (PNG)")
    p.add_argument("--json", default="frontier.json", help="points and comparisons (JSON)")
    p = sub.add_parser("throughput")
    p.add_argument("--routers", required=True, help="router checkpoint directory")
    p.add_argument("--model", default=ModelSpec().name, help="ModelSpec name (or local dir)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="synthetic_arith")
    p.add_argument("--dataset-path", default=None)
    p.add_argument("--levels", default=None, help="comma-separated levels (synthetic_arith, math)")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--no-check-model-id", action="store_true")
    p.add_argument("--out", default="throughput.png")
    return parser


def _throughput(args: argparse.Namespace) -> dict:
    levels = tuple(int(x) for x in args.levels.split(",")) if args.levels else None
    if args.dataset == "synthetic_arith" and levels is None:
        levels = (1,)
    data = DatasetConfig(name=args.dataset, path=args.dataset_path, levels=levels,
                         num_examples=args.num_prompts)
    rm = RoutedModel.from_pretrained(ModelSpec(name=args.model, device=args.device), args.routers,
                                     args.alpha, check_model_id=not args.no_check_model_id)
    texts = [render_prompt(e, rm.tokenizer, style=data.prompt_style)
             for e in load_examples(data).examples]
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    return throughput(rm, rm.executor.encode(texts), sizes, max_new_tokens=args.max_new_tokens,
                      alpha=args.alpha, out=args.out)


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "alpha-sweep":
        result = alpha_sweep(args.results, args.out)
    elif args.command == "decisions":
        result = decision_frequencies(args.results, args.out)
    elif args.command == "frontier":
        result = frontier(args.results, args.out, args.json)
    else:
        result = _throughput(args)
    print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    main()
