"""Evaluation of routed models: what routers buy against default, oracle and static baselines.

* :func:`~drllm.evaluation.runner.run_evaluation` -- policies x examples on evaluator actors,
  per-example Parquet results, resumable; :mod:`drllm.evaluation.job` the whole job.
* :mod:`~drllm.evaluation.policies` -- default, routed (alpha), oracle, static (ShortGPT,
  random) policies; matched-cost ``k``.
* :mod:`~drllm.evaluation.evaluator` -- the actor-side evaluator that holds the routers.
* :mod:`~drllm.evaluation.summary` -- Wilson intervals, per-policy figures, the table.
* :mod:`~drllm.evaluation.analysis` -- the paper's analyses (alpha sweep, throughput,
  decisions).

Importing the package imports nothing heavy; import the submodules.
"""
