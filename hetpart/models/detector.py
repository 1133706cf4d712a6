"""A single-stage (SSD/RetinaNet-like) object detector with in-graph post-processing.

Backbone: stride-2 3x3 conv + ReLU stages.  Head on the last feature map: a 3x3
conv + ReLU, then two 1x1 convs giving, per cell and anchor, 4 box deltas and
``num_classes`` class logits.  Deltas are decoded against fixed anchors (center
+ delta * size, size * exp(delta), as SSD does) into corner boxes
``[y1, x1, y2, x2]``; logits go through Sigmoid.

Post-processing, the part that makes detectors awkward to compile:

* ``NonMaxSuppression`` (per class, ``max_detections`` boxes per class) ->
  ``selected_indices`` int64 [num_selected, 3] of (batch, class, box): the only
  dynamically shaped output.
* best score per anchor (ReduceMax over classes), then ``TopK`` ->
  ``topk_scores`` [batch, topk] and ``topk_indices`` int64 [batch, topk].

Outputs also include the decoded ``boxes`` [batch, num_anchors, 4] and ``scores``
[batch, num_classes, num_anchors], where num_anchors = cells * anchors_per_cell.

Full: 320x320 input, backbone 32/64/128/256 channels (20x20 cells), 3 anchors per
cell (1200 anchors), 80 classes.  Small: 64x64 input, 8/16/32 channels (8x8 cells),
2 anchors per cell (128 anchors), 4 classes; NMS keeps 20 per class at IoU 0.3
and score 0.5; top 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from hetpart.models.graph_builder import GraphBuilder
from hetpart.models.registry import check, register

# Deltas for log-size are clipped before Exp, as torchvision does, so a random
# head never yields inf-sized boxes.
MAX_LOG_SCALE = 4.0
# Anchor side lengths, in cells, for anchor 0, 1, 2, ... of each cell.
ANCHOR_SIDES = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class DetectorConfig:
    image_size: int = 320
    channels: tuple[int, ...] = (32, 64, 128, 256)  # one stride-2 stage each
    anchors_per_cell: int = 3
    num_classes: int = 80
    max_detections: int = 100  # NMS: boxes kept per class
    iou_threshold: float = 0.5
    score_threshold: float = 0.05
    topk: int = 100


FULL = DetectorConfig()
# Small keeps 20 of 128 boxes per class with a low IoU threshold, so NMS really
# suppresses overlapping boxes even with random scores (5 per class would just be
# the 5 best); its score threshold (scores are ~0.5) drops about half the boxes.
SMALL = DetectorConfig(
    image_size=64, channels=(8, 16, 32), anchors_per_cell=2, num_classes=4,
    max_detections=20, iou_threshold=0.3, score_threshold=0.5, topk=10,
)


@register("detector", "Single-stage detector with NonMaxSuppression and TopK",
          full=FULL, small=SMALL)
def build_detector(cfg: DetectorConfig, batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    grid = _validate(cfg)
    b = GraphBuilder("detector", seed)
    x = b.input("input", (batch, 3, cfg.image_size, cfg.image_size))
    features, channels = _backbone(b, x, cfg)
    boxes, scores = _head(b, features, channels, grid, cfg, batch)
    return b.finish({"boxes": boxes, "scores": scores, **_postprocess(b, boxes, scores, cfg)})


def _backbone(b: GraphBuilder, x: str, cfg: DetectorConfig) -> tuple[str, int]:
    in_ch = 3
    for i, ch in enumerate(cfg.channels):
        x = b.conv(x, f"backbone.{i}.conv", in_ch, ch, 3, stride=2, bias=True)
        x = b.relu(x, f"backbone.{i}.relu")
        in_ch = ch
    return x, in_ch


def _head(b: GraphBuilder, x: str, ch: int, grid: int, cfg: DetectorConfig, batch: int):
    """Decoded boxes [B, anchors, 4] and class scores [B, classes, anchors]."""
    x = b.relu(b.conv(x, "head.conv", ch, ch, 3, bias=True), "head.relu")
    shape = (batch, grid * grid * cfg.anchors_per_cell)
    deltas = _per_anchor(b, x, "head.bbox", ch, cfg.anchors_per_cell, 4, shape)
    logits = _per_anchor(b, x, "head.cls", ch, cfg.anchors_per_cell, cfg.num_classes, shape)
    logits = b.transpose(logits, "head.cls.per_class", (0, 2, 1))  # NMS wants classes first
    return _decode(b, deltas, grid, cfg), b.op("Sigmoid", [logits], "head.cls.sigmoid")


def _postprocess(b: GraphBuilder, boxes: str, scores: str, cfg: DetectorConfig) -> dict[str, str]:
    selected = b.op(
        "NonMaxSuppression",
        [
            boxes, scores,
            b.const("nms.max_output_boxes_per_class", [cfg.max_detections]),
            b.const("nms.iou_threshold", [cfg.iou_threshold]),
            b.const("nms.score_threshold", [cfg.score_threshold]),
        ],
        "nms", center_point_box=0,
    )
    best = b.op("ReduceMax", [scores], "best_class_score", axes=[1], keepdims=0)  # [B, anchors]
    k = b.const("topk.k", [cfg.topk])
    top_scores, top_indices = b.op(
        "TopK", [best, k], "topk", num_outputs=2, axis=-1, largest=1, sorted=1
    )
    return {"selected_indices": selected, "topk_scores": top_scores, "topk_indices": top_indices}


def _per_anchor(b: GraphBuilder, x: str, name: str, in_ch: int, anchors: int, values: int,
                shape: tuple[int, int]) -> str:
    """1x1 conv to ``anchors * values`` channels, laid out as [B, cells*anchors, values]."""
    # Small weights: deltas near 0 decode to boxes near their anchors.
    y = b.conv(x, name, in_ch, anchors * values, 1, bias=True, gain=0.1)
    y = b.transpose(y, f"{name}.nhwc", (0, 2, 3, 1))
    return b.reshape(y, f"{name}.per_anchor", (*shape, values))


def _decode(b: GraphBuilder, deltas: str, grid: int, cfg: DetectorConfig) -> str:
    """SSD-style decoding of [B, anchors, 4] deltas into corner boxes [y1, x1, y2, x2]."""
    centers, sizes = _anchors(grid, cfg)
    a_center, a_size = b.const("anchors.center", centers), b.const("anchors.size", sizes)
    split = b.const("decode.split_sizes", [2, 2])
    d_ctr, d_size = b.op("Split", [deltas, split], "decode.split", num_outputs=2, axis=2)
    offset = b.op("Mul", [d_ctr, a_size], "decode.center_offset")
    ctr = b.op("Add", [a_center, offset], "decode.center")
    low = b.const("decode.min_log_scale", -MAX_LOG_SCALE)
    high = b.const("decode.max_log_scale", MAX_LOG_SCALE)
    d_size = b.op("Clip", [d_size, low, high], "decode.clip")
    size = b.op("Mul", [b.op("Exp", [d_size], "decode.exp"), a_size], "decode.size")
    half = b.op("Mul", [size, b.const("const.half", 0.5)], "decode.half_size")
    top_left = b.op("Sub", [ctr, half], "decode.top_left")
    bottom_right = b.op("Add", [ctr, half], "decode.bottom_right")
    return b.op("Concat", [top_left, bottom_right], "decode.boxes", axis=2)


def _anchors(grid: int, cfg: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Anchor (cy, cx) and (h, w) in pixels, [1, cells*anchors, 2], cell-major like the head."""
    cell = cfg.image_size / grid
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    centers = (np.stack([ys, xs], -1).reshape(-1, 1, 2) + 0.5) * cell  # [cells, 1, 2]
    centers = np.repeat(centers, cfg.anchors_per_cell, axis=1)
    sides = np.array(ANCHOR_SIDES[: cfg.anchors_per_cell]) * cell
    sizes = np.broadcast_to(sides[None, :, None], centers.shape)
    return centers.reshape(1, -1, 2), sizes.reshape(1, -1, 2)  # const() makes them float32


def _validate(cfg: DetectorConfig) -> int:
    """Check ``cfg``; returns the side of the final feature map."""
    check(len(cfg.channels) >= 1 and all(c >= 1 for c in cfg.channels),
          f"detector: channels must be >= 1 each, got {cfg.channels}")
    stride = 2 ** len(cfg.channels)
    check(cfg.image_size % stride == 0,
          f"detector: image_size {cfg.image_size} must be a multiple of "
          f"2**len(channels) = {stride}")
    check(1 <= cfg.anchors_per_cell <= len(ANCHOR_SIDES),
          f"detector: anchors_per_cell must be 1..{len(ANCHOR_SIDES)}, got {cfg.anchors_per_cell}")
    check(cfg.num_classes >= 1 and cfg.max_detections >= 1,
          "detector: num_classes and max_detections must be >= 1")
    grid = cfg.image_size // stride
    num_anchors = grid * grid * cfg.anchors_per_cell
    check(1 <= cfg.topk <= num_anchors,
          f"detector: topk must be 1..num_anchors ({num_anchors}), got {cfg.topk}")
    check(0.0 <= cfg.iou_threshold <= 1.0,
          f"detector: iou_threshold must be in [0, 1], got {cfg.iou_threshold}")
    return grid
