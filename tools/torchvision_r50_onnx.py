"""Issue 18: ``zoo:resnet50`` rewritten the way ``torch.onnx.export`` (TorchScript, eval mode,
``do_constant_folding=True``, opset 17) writes torchvision's ResNet-50, without torch.

In: the zoo model (:func:`hetpart.models.build`, same seed, so the same function).
Out: an ONNX model (opset 17) where every ``Conv -> BatchNormalization`` pair is one ``Conv``
with a bias (``W * gamma/sqrt(var+eps)`` per output channel, ``beta - mean*gamma/sqrt(var+eps)``),
no BatchNormalization left; Conv nodes carry the attributes the exporter writes
(``dilations``, ``group``, ``kernel_shape``, ``pads``, ``strides``); ``Gemm`` carries
``alpha``, ``beta``, ``transB``; MaxPool 3x3 s2 pad 1 (``ceil_mode``, ``dilations`` explicit), ``Add(branch, shortcut) -> Relu``,
GlobalAveragePool, Flatten are the zoo's already (the same as the export's).
Invariant: the output equals the zoo model's up to float rounding of the fold.

    PYTHONPATH=. python tools/torchvision_r50_onnx.py /tmp/r50tv/resnet50_tv.onnx [--batch 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fold_bn_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each BatchNormalization whose input is a Conv's only use folded
    into that Conv (weight scaled, bias added), as the exporter's eval-mode peephole does."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    keep, new_inits = [], {}
    dropped = set()
    for n in g.node:
        if n.op_type == "BatchNormalization":
            conv = producer.get(n.input[0])
            if conv is None or conv.op_type != "Conv" or uses[n.input[0]] != 1:
                raise ValueError(f"{n.name}: BatchNormalization not after a single-use Conv")
            eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
            scale, shift, mean, var = (inits[i] for i in n.input[1:5])
            k = scale / np.sqrt(var + eps)
            w = inits[conv.input[1]] * k[:, None, None, None]
            b0 = inits[conv.input[2]] if len(conv.input) > 2 else np.zeros_like(k)
            b = (b0 - mean) * k + shift
            wname, bname = conv.name + ".weight", conv.name + ".bias"
            new_inits[wname], new_inits[bname] = w.astype(np.float32), b.astype(np.float32)
            dropped.update([conv.input[1], *n.input[1:5]])
            del conv.input[1:]
            conv.input.extend([wname, bname])
            conv.output[0] = n.output[0]
            continue
        keep.append(n)
    for n in keep:
        if n.op_type == "Conv":
            _torch_conv_attrs(n, inits.get(n.input[1], new_inits.get(n.input[1])))
        elif n.op_type == "MaxPool":
            _torch_maxpool_attrs(n)
        elif n.op_type == "Gemm":
            have = {a.name for a in n.attribute}
            for name, v in (("alpha", 1.0), ("beta", 1.0)):
                if name not in have:
                    n.attribute.append(helper.make_attribute(name, v))
    del g.node[:]
    g.node.extend(keep)
    old = [t for t in g.initializer if t.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(old)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in new_inits.items())
    return m


def _torch_conv_attrs(node: onnx.NodeProto, weight) -> None:
    """Every attribute the TorchScript exporter writes on a Conv, in its order."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kh, kw = (list(attrs["kernel_shape"]) if "kernel_shape" in attrs else list(weight.shape[2:]))
    full = {"dilations": list(attrs.get("dilations", [1, 1])), "group": int(attrs.get("group", 1)),
            "kernel_shape": [kh, kw], "pads": list(attrs.get("pads", [0, 0, 0, 0])),
            "strides": list(attrs.get("strides", [1, 1]))}
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in full.items())


def _torch_maxpool_attrs(node: onnx.NodeProto) -> None:
    """MaxPool as the exporter writes it at opset 17: ceil_mode and dilations explicit."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    full = {"ceil_mode": int(attrs.get("ceil_mode", 0)), "dilations": list(attrs.get("dilations", [1, 1])),
            "kernel_shape": list(attrs["kernel_shape"]), "pads": list(attrs.get("pads", [0, 0, 0, 0])),
            "strides": list(attrs.get("strides", [1, 1]))}
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in full.items())


def torchvision_resnet50(batch: int = 1, seed: int = 0) -> onnx.ModelProto:
    """The zoo ResNet-50 (full size) in the torchvision export's form (see the module docstring)."""
    from hetpart import models

    z = models.parse_zoo_spec("zoo:resnet50" + (f":batch={batch}" if batch != 1 else ""))
    m = fold_bn_into_conv(models.build(z[0], small=z[1], **z[2]))
    onnx.checker.check_model(m)
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path")
    p.add_argument("--batch", type=int, default=1)
    a = p.parse_args(argv)
    m = torchvision_resnet50(a.batch)
    onnx.save(m, a.path)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(a.path, "opset", [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")], ops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
