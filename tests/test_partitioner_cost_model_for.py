"""``hetpart.partitioner.cost_model_for``: the public "cost model for this profile
argument" -- what ``partition`` prices with when given ``profile=``, and what
``partition_together`` builds from its ``profile`` (no private import across packages).
"""

from __future__ import annotations

import hetpart
import hetpart.partitioner
from hetpart.costmodel import CostModel
from hetpart.partitioner import cost_model_for, partition
from hetpart.together import partition_together
from data_parallel_cases import split_model
from partition_graphs import models_of, plannable


def test_it_is_what_partition_prices_with_by_default():
    """On the default profile (here the recorded one): the same plan and predictions as
    ``partition`` choosing its cost model itself."""
    costs = cost_model_for(None)
    assert isinstance(costs, CostModel)
    graph = hetpart.importer.load(split_model(), shapes={"x": [16, 8]})
    own, given = partition(graph, progress=False), partition(graph, cost_model=costs, progress=False)
    assert [(p.device, p.kernels) for p in own.partitions] == [(p.device, p.kernels) for p in given.partitions]
    assert own.predicted["latency_s"] == given.predicted["latency_s"]


def test_partition_together_builds_its_cost_model_through_it(monkeypatch):
    seed = next(s for s in range(100) if plannable(*models_of(s, 1)))
    graphs, costs = models_of(seed, 1)
    asked = []

    def stub(profile=None):
        asked.append(profile)
        return costs["m0"]

    monkeypatch.setattr(hetpart.partitioner, "cost_model_for", stub)
    cap = 10 * sum(k.param_bytes for k in graphs["m0"].kernels.values()) + (1 << 24)
    joint = partition_together(graphs, gpu_memory=cap, profile="the-profile-argument")
    assert asked == ["the-profile-argument"] and joint.names == ["m0"]
