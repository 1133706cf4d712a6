"""Import stage: ONNX model -> op graph of fused TVM kernels.

Pipeline, one module each: :mod:`.onnx_source` (read, check, fix shapes) ->
:mod:`.shape_folding` (fold what the static shapes decide) -> :mod:`.grouped_query_attention`
(attention over repeated K/V heads computed per K/V head) -> :mod:`.relax_import`
(TVM ``from_onnx``) -> :mod:`.fusion` (legalise + fuse) -> :mod:`.op_graph_builder`
(an :class:`OpGraph`).
"""

from .onnx_source import ModelSource, input_shapes, read_model, read_source
from .op_graph import Kernel, OpGraph, Tensor
from .relax_import import load, to_relax

__all__ = ["Kernel", "ModelSource", "OpGraph", "Tensor", "input_shapes", "load", "read_model", "read_source", "to_relax"]
