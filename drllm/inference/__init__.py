"""Inference with trained routers: :class:`RoutedModel` decides each row's layer path at prefill;
:func:`router_path_probs` gives the routers' per-block probabilities (an MCTS prior)."""

from drllm.inference.router_probs import path_probs, router_path_probs
from drllm.inference.routed import RoutedModel

__all__ = ["RoutedModel", "path_probs", "router_path_probs"]
