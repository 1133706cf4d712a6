"""Issue 18, the channel-blocked import's kernels at 16 cores (bench/results/cpu-blocked-parallel-audit.md):
kernels whose parallel loop could not feed 16 threads now can -- a blocked concat (+ BN + ReLU) runs in
parallel over chunks of its plane (``rules/cpu_injective.PARALLEL_BLOCKED_CONCAT``).  Each is built
for a 16-core target (the rules read the core count) and checked against TVM's unscheduled build of
the same module, with the switch on and off, on inputs with negatives and zeros."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from hetpart import kernels
from hetpart.kernels.rules import cpu_injective
from onnx_cases import fused_program, run_vm

op = relax.op
RNG = np.random.default_rng(11)


def _target16():
    from hetpart.targets import cpu_tvm_target

    return cpu_tvm_target(16)


def _fused(inputs, body):
    args = []
    for _, s in inputs:
        a = RNG.standard_normal(s).astype("float32")
        a.reshape(-1)[::7] = 0.0
        args.append(a)
    return fused_program(inputs, body), args




def _scripts(mod, target) -> str:
    done = kernels.schedule(mod, target)
    return "\n".join(f.script() for _, f in done.functions_items() if isinstance(f, tirx.PrimFunc))


def _concat_bn_relu(blocks, hw, c=16, batch=1):
    """A blocked concat of inputs of ``blocks`` channel blocks ``[n, b, h, w, c]`` -> x * s + t -> ReLU."""
    total = sum(blocks)
    s = relax.const(RNG.uniform(-1.5, 1.5, (1, total, 1, 1, c)).astype("float32"))
    t = relax.const(RNG.standard_normal((1, total, 1, 1, c)).astype("float32"))

    def body(bb, *xs):
        cat = bb.emit(op.concat(list(xs), axis=1))
        return bb.emit(op.nn.relu(bb.emit(op.add(bb.emit(op.multiply(cat, s)), t))))

    return [(f"x{i}", (batch, b, *hw, c)) for i, b in enumerate(blocks)], body


@pytest.mark.parametrize("blocks,hw,batch", [([4, 2, 2, 2], (14, 14), 1), ([8] + [2] * 5, (7, 7), 1),
                                             ([2, 2], (28, 28), 2), ([3, 1, 2], (5, 7), 1)])
@pytest.mark.parametrize("on", [True, False])
def test_blocked_concat_matches_unscheduled(monkeypatch, blocks, hw, batch, on):
    monkeypatch.setattr(cpu_injective, "PARALLEL_BLOCKED_CONCAT", on)
    monkeypatch.setattr(cpu_injective, "BLOCKED_CONCAT_PARALLEL_MIN", 0)
    mod, args = _fused(*_concat_bn_relu(blocks, hw, batch=batch))
    target = _target16()
    want = run_vm(tvm.compile(mod, target), args)
    got = run_vm(kernels.build(mod, target), args)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))  # FMA contraction
    text = _scripts(mod, target)
    assert text.count("_partition\")") == len(blocks)  # still one loop per input
    assert ("T.parallel(" in text) == on


def test_blocked_concat_chunks_split_evenly_over_the_cores():
    """The plane is cut so that TVM's contiguous split over the cores gives the busiest thread the
    fewest pixels, in the longest runs; a one-core target keeps the plane whole (serial, as before)."""
    chunk = cpu_injective.blocked_concat_chunk
    assert [chunk(p, 16) for p in (3136, 784, 196, 49)] == [196, 49, 14, 1]
    assert chunk(784, 1) == 784 and chunk(49, 2) == 7
    assert chunk(3136, 16, batch=16) == 3136 and chunk(3136, 16, batch=2) == 392  # E = batch * pixels / d


def test_small_blocked_concat_stays_serial():
    mod, _ = _fused(*_concat_bn_relu([2, 1], (7, 7)))  # 1.5 Ki outputs: under the threshold
    assert "T.parallel(" not in _scripts(mod, _target16())


@pytest.mark.parametrize("on", [True, False])
def test_layout_transform_to_blocked_matches_unscheduled(monkeypatch, on):
    """NCHW -> NCHW16c (TVM's legalisation scatters each source element 16 floats apart): parallel
    from the strided threshold with ``STRIDED_WRITES_PARALLEL`` (before: serial under 256 Ki outputs)."""
    monkeypatch.setattr(cpu_injective, "STRIDED_WRITES_PARALLEL", on)

    def body(bb, x):
        return bb.emit(op.layout_transform(x, index_map=lambda n, c, h, w: (n, c // 16, h, w, c % 16)))

    mod, args = _fused([("x", (1, 64, 20, 20))], body)
    target = _target16()
    want = run_vm(tvm.compile(mod, target), args)
    got = run_vm(kernels.build(mod, target), args)
    np.testing.assert_array_equal(got, want)
    assert ("T.parallel(" in _scripts(mod, target)) == on



def test_plain_blocked_concat_parallel_only_from_the_copy_threshold():
    """A concat with nothing after it is a copy (each part one contiguous run): parallel from the
    contiguous threshold (256 Ki), not from the epilogue's 32 Ki."""
    def plain(blocks, hw):
        return [(f"x{i}", (1, b, *hw, 16)) for i, b in enumerate(blocks)], \
            lambda bb, *xs: bb.emit(op.concat(list(xs), axis=1))

    small, _ = _fused(*plain([16, 16], (14, 14)))   # 100 Ki outputs (googlenet's 14x14 concats)
    big, args = _fused(*plain([16, 16], (28, 28)))  # 400 Ki
    assert "T.parallel(" not in _scripts(small, _target16())
    assert "T.parallel(" in _scripts(big, _target16())
    target = _target16()
    np.testing.assert_array_equal(run_vm(kernels.build(big, target), args), run_vm(tvm.compile(big, target), args))


def test_blocked_concat_of_8_channel_blocks_matches_unscheduled(monkeypatch):
    """NCHW8c (AVX2's block, and the 24/40-channel tensors of MIXED_BLOCKS): a half vector a pixel."""
    monkeypatch.setattr(cpu_injective, "BLOCKED_CONCAT_PARALLEL_MIN", 0)
    mod, args = _fused(*_concat_bn_relu([3, 2, 1], (14, 14), c=8))
    target = _target16()
    want = run_vm(tvm.compile(mod, target), args)
    got = run_vm(kernels.build(mod, target), args)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))
    assert "T.parallel(" in _scripts(mod, target)
