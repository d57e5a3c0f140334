"""drllm: Dr.LLM dynamic layer routing for frozen decoder-only LLMs.

See ``README.md`` for the two commands that set up and run the project, and
``../shared/DESIGN.md`` (or the project docs) for the architecture.
"""

__version__ = "0.1.0"
