"""Runners: one interface (activate / infer / deactivate) over every backend's three graphs."""

from .base import GRAPH_NAMES, Backend, BaseRunner, GraphIO, TensorSpec, graph_io

__all__ = ["GRAPH_NAMES", "Backend", "BaseRunner", "GraphIO", "TensorSpec", "graph_io"]
