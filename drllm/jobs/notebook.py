"""``python -m drllm.jobs.notebook <notebook> [--out executed.ipynb]``: run a notebook in this venv.

Parameters reach the notebook through environment variables (``DRLLM_EVAL_DIR=...``,
``DRLLM_SHARDS_DIR=...``), read by its parameters cell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from drllm.notebooks import execute_notebook


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m drllm.jobs.notebook")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the executed notebook (default: <name>.executed.ipynb)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    out = args.out or args.notebook.with_suffix(".executed.ipynb")
    execute_notebook(args.notebook, out, args.timeout)
    print(f"executed {args.notebook} -> {out}")


if __name__ == "__main__":
    main()
