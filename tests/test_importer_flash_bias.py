"""``hetpart.importer.flash_bias``: a masked scores kernel read as ``scale * Q K^T + bias``.

The scores kernels of transformers' eager exports after hetpart's import and bf16 lowering
(DistilBERT's ``Where(mask == 0 expanded, finfo.min, Q K^T)`` with q divided first; BERT's
``Q K^T / 8 + (1 - mask) * finfo.min``; an additive ``[1, 1, T, T]`` mask input): Q's and K^T's
parameters, the scale, the broadcast bias shape ``[b, 1, 1, s]`` / ``[1, 1, s, s]``, the fill
parameter; the bias TE compute built for the CPU gives numpy's bias on an ``attention_mask`` with
padding.  The unmasked scores kernel, the softmax and P V are not of the form.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te

from attention_cases import masked_attention, masked_feeds, onnx_attention
from precision_cases import all_on

from hetpart import importer
from hetpart.compiler.precision import lower_plan_weights
from hetpart.contracts.precision import Precision
from hetpart.importer import flash_bias

LOW = np.finfo(np.float32).min


def _kernels(m):
    """(lowered graph, scores kernel, softmax kernel, P V kernel) of ``m``'s one attention block."""
    graph = importer.load(m)
    low = lower_plan_weights(graph, all_on(graph, "cuda"), Precision(cuda="bf16"))
    sm = next(k for k in low.kernels.values() if k.op_class == "softmax")
    (pv,) = low.tensors[sm.outputs[0]].consumers
    return low, low.kernels[low.tensors[sm.inputs[0]].producer], sm, low.kernels[pv]


def _run_bias(form, arrays):
    """The bias of ``form`` built for the CPU and run on ``arrays`` (its bias parameters' values)."""
    ts = [te.placeholder([int(d) for d in form.buffers[i].shape], str(form.buffers[i].dtype), f"p{i}")
          for i in form.bias_params]
    out = flash_bias.bias_te(form, ts)
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([*ts, out])}), target="llvm")
    args = [tvm.runtime.tensor(np.asarray(a)) for a in arrays]
    args.append(tvm.runtime.empty([int(d) for d in out.shape], "float32"))
    lib["main"](*args)
    return args[-1].numpy()


@pytest.mark.parametrize("batch", [1, 3])
def test_distilbert_where_form(batch):
    low, qk, _, _ = _kernels(masked_attention("where", batch=batch, seq=40))
    form = flash_bias.scores_form(low.module[qk.func])
    assert form is not None and form.scale == 1.0  # q divided by sqrt(64) before Q K^T
    assert form.bias_shape == (batch, 1, 1, 40) and form.fill_param is not None
    assert [int(d) for d in form.buffers[form.q].shape] == [batch, 2, 40, 64]
    assert [int(d) for d in form.buffers[form.kt].shape] == [batch, 2, 64, 40]
    mask = masked_feeds(batch, 40)["attention_mask"]
    pad = (mask == 0).reshape(batch, 1, 1, 40)  # the Equal -> Reshape kernel's output
    fill = np.array(LOW, np.float32)
    values = [pad if len(form.buffers[i].shape) else fill for i in form.bias_params]
    assert np.array_equal(_run_bias(form, values), np.where(pad, LOW, 0).astype(np.float32))


def test_bert_additive_form():
    low, qk, _, _ = _kernels(masked_attention("add", batch=2, seq=40))
    form = flash_bias.scores_form(low.module[qk.func])
    assert form is not None and form.scale == 1 / 8 and form.fill_param is None
    assert form.bias_shape == (2, 1, 1, 40) and len(form.bias_params) == 1
    mask = masked_feeds(2, 40)["attention_mask"]
    want = ((1 - mask.astype(np.float32)) * LOW).reshape(2, 1, 1, 40)
    assert np.array_equal(_run_bias(form, [mask]), want)


def test_additive_mask_input_form():
    low, qk, _, _ = _kernels(onnx_attention(mask=True))
    form = flash_bias.scores_form(low.module[qk.func])
    assert form is not None and abs(form.scale - 0.125) < 1e-7 and form.bias_shape == (1, 1, 40, 40)
    m = np.random.default_rng(0).standard_normal((1, 1, 40, 40)).astype(np.float32)
    assert np.array_equal(_run_bias(form, [m]), m)


def test_other_kernels_are_not_of_the_form():
    low, qk, sm, pv = _kernels(onnx_attention())
    for k in (qk, sm, pv):  # unmasked scores (no bias), softmax, P V
        assert flash_bias.scores_form(low.module[k.func]) is None
    low, _, sm, pv = _kernels(masked_attention("add"))
    assert flash_bias.scores_form(low.module[sm.func]) is None and flash_bias.scores_form(low.module[pv.func]) is None
