"""Inference with trained routers: :class:`RoutedModel` decides each row's layer path at prefill."""

from drllm.inference.routed import RoutedModel

__all__ = ["RoutedModel"]
