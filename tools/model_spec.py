"""What the GPU tools start from: a model argument (``zoo:NAME[:small][:key=value,...]`` or an
ONNX path) read as an op graph, and the plan that puts all of it on CUDA.

    from model_spec import all_cuda_plan, load_model
    graph = load_model("zoo:bert:seq_len=197", batch=32)   # an OpGraph
    plan = all_cuda_plan(graph)                             # every kernel "cuda", one partition

Its own module (not a function of one tool) so a tool that needs only this carries nothing else
to the GPU machine (``tools/device_stage.sh`` keeps what a step names).
"""

from __future__ import annotations


def load_model(spec: str, batch: int):
    """The op graph of ``spec`` (``zoo:NAME[:small][:key=value,...]`` or an ONNX path); a zoo model
    is built at ``batch`` (an ONNX file keeps its own)."""
    import hetpart

    if spec.startswith("zoo:"):
        from hetpart.models import build, parse_zoo_spec

        name, small, cfg = parse_zoo_spec(spec)
        return hetpart.load(build(name, small, **{**cfg, "batch": batch}))
    return hetpart.load(spec)


def all_cuda_plan(graph):
    """A :class:`~hetpart.partitioner.Plan` of ``graph`` with every kernel on CUDA in one partition
    (no profile, no prediction: objective ``coverage``), for tools that build all-CUDA."""
    from hetpart.partitioner import Partition, Plan

    kids = list(graph.topological_order())
    return Plan(model=graph.name, objective="coverage", assignment={k: "cuda" for k in kids},
                partitions=[Partition("p0_cuda", "cuda", kids)], cuts=[], timeline=[], predicted={},
                profile_origin="coverage", graph=graph)
