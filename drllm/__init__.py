"""drllm: Dr.LLM dynamic layer routing for frozen decoder-only LLMs.

See ``README.md``: its *Map of the code* names the packages, what flows between them and where
to start reading for each job (``drllm/jobs/<job>.py``, each a recipe whose entry function is
``run``); then the two commands that set up and run the project. ``../shared/DESIGN.md`` (or
the project docs) holds the architecture.
"""

__version__ = "0.1.0"
