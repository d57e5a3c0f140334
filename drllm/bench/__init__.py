"""Benchmarks (library side); run them with ``python -m drllm.jobs.bench <name>``.

* :mod:`drllm.bench.executor` -- edited-path executor vs. the serial published method and stock
  ``generate`` on SmolLM2 with ARC prompts.
"""
