"""DLRM, Facebook's deep learning recommendation model, with dot interaction.

Inputs: ``dense_features`` float32 [batch, dense_features] and ``sparse_indices``
int64 [batch, num_tables], one row index into each embedding table.

* Bottom MLP (Gemm+Relu) maps the dense features to ``embedding_dim``.
* Each sparse column is looked up (``Split`` then ``Gather``) in its own table of
  ``table_rows`` x ``embedding_dim`` float32.
* Interaction: the F = num_tables + 1 vectors are stacked to [batch, F, d]; all
  pairwise dot products are one MatMul with its transpose ([batch, F, F]); the
  strictly-lower triangle (F*(F-1)/2 values) is gathered and concatenated with the
  bottom-MLP output.
* Top MLP (Gemm+Relu), a final Gemm to one logit, and Sigmoid -> ``click_probability``
  [batch, 1].

The tables dominate the size: num_tables * table_rows * embedding_dim * 4 bytes.
Full (default): 8 tables x 200,000 rows x 64 = ~410 MB, quick to generate.  Far
bigger configurations work (``table_rows=1_000_000, num_tables=26`` is ~6.6 GB and
needs about that much free memory, plus one table), but protobuf cannot serialize
a message over 2 GB: such a model cannot go through ``onnx.checker.check_model`` or
``onnx.shape_inference.infer_shapes`` in memory (use their ``*_path`` forms on a
saved file) and must be saved with external data, e.g.
``onnx.save_model(m, path, save_as_external_data=True)``; ``hetpart.models.save``
does so automatically above ~1.8 GB.

Small: 3 tables x 100 rows x 8 dims, bottom MLP 13 -> 16 -> 8, top MLP 14 -> 16 -> 1.

Unlike the other zoo models its default batch is 256 (``zoo:dlrm:batch=1`` for one
item).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register


@dataclass(frozen=True)
class DLRMConfig:
    dense_features: int = 13  # Criteo's 13 integer features
    num_tables: int = 8
    table_rows: int = 200_000
    embedding_dim: int = 64
    bottom_mlp: tuple[int, ...] = (512, 256)  # hidden sizes; the output is embedding_dim
    top_mlp: tuple[int, ...] = (512, 256)  # hidden sizes; the output is 1


FULL = DLRMConfig()
# A ranking request scores many candidate items at once, so DLRM is served batched
# (MLPerf's DLRM server scenario batches far more); at batch 1 its MLPs are too small
# for a GPU to pay for the launch and the copies.
DEFAULT_BATCH = 256
SMALL = DLRMConfig(num_tables=3, table_rows=100, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,))


@register("dlrm", "DLRM recommendation model (embedding tables + dot interaction)",
          full=FULL, small=SMALL, default_batch=DEFAULT_BATCH)
def build_dlrm(cfg: DLRMConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    _validate(cfg)
    b = GraphBuilder("dlrm", seed)
    dense = b.input("dense_features", (batch, cfg.dense_features))
    sparse = b.input("sparse_indices", (batch, cfg.num_tables), dtype="int64",
                     index_limit=cfg.table_rows)
    bottom = _mlp(b, dense, "bottom_mlp", [cfg.dense_features, *cfg.bottom_mlp, cfg.embedding_dim])
    features = [b.op("Unsqueeze", [bottom, b.const("const.axis1", [1])], "bottom_mlp.unsqueeze")]
    features += _embeddings(b, sparse, cfg)
    interactions = _dot_interaction(b, features)
    x = b.op("Concat", [bottom, interactions], "interaction.concat", axis=1)
    width = cfg.embedding_dim + len(features) * (len(features) - 1) // 2
    sizes = [width, *cfg.top_mlp]
    x = _mlp(b, x, "top_mlp", sizes)
    logit = b.linear(x, f"top_mlp.{len(cfg.top_mlp)}", sizes[-1], 1, gain=1.0)
    return b.finish({"click_probability": b.op("Sigmoid", [logit], "sigmoid")})


def _mlp(b: GraphBuilder, x: str, name: str, sizes: list[int]) -> str:
    """Gemm+Relu for each consecutive pair of ``sizes``."""
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        x = b.relu(b.linear(x, f"{name}.{i}", n_in, n_out), f"{name}.{i}.relu")
    return x


def _embeddings(b: GraphBuilder, sparse: str, cfg: DLRMConfig) -> list[str]:
    """One [batch, 1, d] lookup per table."""
    sizes = b.const("sparse.split_sizes", [1] * cfg.num_tables)
    columns = b.op("Split", [sparse, sizes], "sparse.split", num_outputs=cfg.num_tables, axis=1)
    columns = [columns] if cfg.num_tables == 1 else columns
    # Uniform, as DLRM initializes its tables (and ~5x faster to draw than normal,
    # which matters for GBs); the bound gives std 1/sqrt(d), so embedding dot
    # products are O(1) like the bottom MLP's output.
    bound = math.sqrt(3.0 / cfg.embedding_dim)
    lookups = []
    for t, column in enumerate(columns):
        table = b.uniform(f"emb.{t}.weight", (cfg.table_rows, cfg.embedding_dim), -bound, bound)
        lookups.append(b.op("Gather", [table, column], f"emb.{t}", axis=0))
    return lookups


def _dot_interaction(b: GraphBuilder, features: list[str]) -> str:
    """All pairwise dot products of the F feature vectors, as [batch, F*(F-1)/2]."""
    n = len(features)
    stacked = b.op("Concat", features, "interaction.stack", axis=1)  # [B, F, d]
    transposed = b.transpose(stacked, "interaction.transpose", (0, 2, 1))  # [B, d, F]
    products = b.op("MatMul", [stacked, transposed], "interaction.dot")  # [B, F, F]
    flat = b.op("Flatten", [products], "interaction.flatten", axis=1)  # [B, F*F]
    rows, cols = np.tril_indices(n, k=-1)  # each unordered pair once, no self-products
    pairs = b.const("interaction.pair_indices", rows * n + cols)
    return b.op("Gather", [flat, pairs], "interaction.pairs", axis=1)


def _validate(cfg: DLRMConfig) -> None:
    sizes = (cfg.dense_features, cfg.num_tables, cfg.table_rows, cfg.embedding_dim,
             *cfg.bottom_mlp, *cfg.top_mlp)
    check(min(sizes) >= 1, f"dlrm: all sizes must be >= 1, got {cfg}")
