"""Small CPU->GPU crossings copied by a kernel reading mapped host memory
(hetpart.runtime.small_copy, SMALL_H2D_BY_KERNEL): which crossings take it, and that the
kernel (the CPU build in simulation, the CUDA build on a GPU) lands the same bytes as a copy."""

from __future__ import annotations

import numpy as np
import pytest

from hetpart import compiler, importer, models
from hetpart.compiler.artifact import TensorSpec
from hetpart.runtime import Session, small_copy
from hetpart.runtime.memory import SimulatedMemory

from streaming_plans import plan_with_devices

HIDDEN = (32, 32, 32)
DEVICES = ["cuda", "cuda", "cpu", "cuda"]  # the feed and p2_cpu's output cross CPU->GPU


@pytest.fixture(scope="module")
def mlp():
    onnx_model = models.build("mlp", small=True, hidden=HIDDEN)
    graph = importer.load(onnx_model)
    return graph, compiler.compile(plan_with_devices(graph, DEVICES, streamed=False), simulate=True, progress=False)


def feeds(graph, seed):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(graph.tensors[n].shape).astype(graph.tensors[n].dtype) for n in graph.inputs}


def test_the_path_is_chosen_by_size_side_and_mode(monkeypatch):
    monkeypatch.setattr(small_copy, "SMALL_H2D_BY_KERNEL", True)
    monkeypatch.setattr(small_copy, "SMALL_H2D_KERNEL_BYTES", 65_536)
    assert small_copy.uses_kernel(8_192, "cpu", "copy", False)
    assert small_copy.uses_kernel(65_536, "cpu", "copy", False)
    assert not small_copy.uses_kernel(65_540, "cpu", "copy", False)  # over the threshold: the copy engine
    assert not small_copy.uses_kernel(8_192, "cuda", "copy", False)  # GPU->CPU: a d2h copy as before
    assert not small_copy.uses_kernel(8_192, "cpu", "mapped", False)  # mapped: no copy at all
    assert not small_copy.uses_kernel(None, "cpu", "copy", True)  # data-dependent: no mapped buffer
    assert not small_copy.uses_kernel(0, "cpu", "copy", False)
    monkeypatch.setattr(small_copy, "SMALL_H2D_BY_KERNEL", False)
    assert not small_copy.uses_kernel(8_192, "cpu", "copy", False)


def test_word_type_follows_size_and_alignment():
    assert small_copy.word_dtype(8_192, 64, 128) == "uint32"
    assert small_copy.word_dtype(8_190, 64, 128) == "uint8"
    assert small_copy.word_dtype(8_192, 66, 128) == "uint8"


@pytest.mark.parametrize("shape,dtype,offset", [((2048,), "float32", 0), ((1001,), "uint8", 0),
                                                ((3, 7), "float16", 2), ((513,), "int64", 0)])
def test_the_simulated_kernel_copy_lands_the_same_bytes(shape, dtype, offset):
    """The CPU build of the copy kernel, on simulated memory (mapped view = the host
    buffer): bit-identical to the source, nothing past it written; odd sizes and an
    unaligned destination take the byte kernel."""
    memory = SimulatedMemory()
    spec = TensorSpec("t", shape, dtype)
    host = memory.pinned(spec)
    host.array.view(np.uint8).reshape(-1)[:] = np.random.default_rng(1).integers(0, 256, host.nbytes, np.uint8)
    raw = memory.device(TensorSpec("raw", (host.nbytes + 64,), "uint8"))
    raw.array[:] = 0xAB
    from hetpart.runtime.memory import Buffer

    dst = Buffer(spec, "cuda", None, raw.ptr + offset, raw.array[offset:offset + host.nbytes])
    kernel = small_copy.prepare(dst, memory.mapped(host), "cpu")
    assert kernel.dtype == ("uint32" if host.nbytes % 4 == 0 and offset % 4 == 0 else "uint8")
    kernel()
    np.testing.assert_array_equal(raw.array[offset:offset + host.nbytes], host.array.view(np.uint8).reshape(-1))
    assert (raw.array[:offset] == 0xAB).all() and (raw.array[offset + host.nbytes:] == 0xAB).all()
    kernel.release()
    memory.close()


def test_a_session_copies_small_crossings_by_kernel_bit_identically(mlp, monkeypatch):
    """The runtime with the switch on (simulated streams): the small CPU->GPU crossings are
    recorded as kernel copies, one over the threshold stays a copy, and outputs are
    bit-identical to the switch off, in runs and pipelined runs."""
    graph, model = mlp
    batches = [feeds(graph, seed) for seed in range(3)]
    out, modes = {}, {}
    for on in (False, True):
        monkeypatch.setattr(small_copy, "SMALL_H2D_BY_KERNEL", on)
        with Session(model, slots=2) as s:
            out[on] = [s.run(f)["logits"] for f in batches] + [o["logits"] for o in s.run_pipelined(batches)]
            s.run(batches[0])
            modes[on] = {e.tensor: (e.mode, e.nbytes) for e in s.last_run_stats.edges if e.direction == "h2d"}
    assert len(modes[True]) >= 2 and {m for m, _ in modes[False].values()} == {"copy"}
    assert {m for m, _ in modes[True].values()} == {"kernel"}
    for a, b in zip(out[False], out[True]):
        np.testing.assert_array_equal(a, b)
    # a threshold under the crossings' sizes: copies again
    monkeypatch.setattr(small_copy, "SMALL_H2D_BY_KERNEL", True)
    monkeypatch.setattr(small_copy, "SMALL_H2D_KERNEL_BYTES", min(n for _, n in modes[True].values()) - 1)
    with Session(model) as s:
        np.testing.assert_array_equal(s.run(batches[0])["logits"], out[False][0])
        assert {e.mode for e in s.last_run_stats.edges if e.direction == "h2d"} == {"copy"}


# --- a real GPU --------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("nbytes", [8_192, 65_536, 1_001, 4])
def test_the_cuda_kernel_copy_matches_a_copy(nbytes):
    """On the GPU: the kernel reading mapped pinned memory lands the same bytes as
    cudaMemcpyAsync, on the stream (odd sizes take the byte kernel)."""
    from hetpart.runtime.memory import CudaMemory
    from hetpart.runtime.streams import CudaStream

    memory, stream = CudaMemory(), CudaStream()
    try:
        spec = TensorSpec("t", (nbytes,), "uint8")
        host = memory.pinned(spec)
        host.array[:] = np.random.default_rng(nbytes).integers(0, 256, nbytes, np.uint8)
        by_kernel, by_copy, back = memory.device(spec), memory.device(spec), memory.pinned(spec)
        kernel = small_copy.prepare(by_kernel, memory.mapped(host), "cuda")
        stream.launch(kernel)
        stream.copy(by_copy, host, "h2d")
        for dev in (by_kernel, by_copy):
            back.array[:] = 0
            stream.copy(back, dev, "d2h")
            m = stream.record()
            m.synchronize()
            m.release()
            np.testing.assert_array_equal(back.array, host.array)
        kernel.release()
    finally:
        stream.close()
        memory.close()


@pytest.mark.cuda
def test_a_gpu_session_with_kernel_copies_matches_copies(monkeypatch):
    """On the GPU: small crossings by kernel give the same outputs, bit for bit, as copies."""
    from hetpart.kernels.options import KernelOptions

    onnx_model = models.build("mlp", small=True, hidden=(256, 256, 256), in_features=256, batch=8)
    graph = importer.load(onnx_model)
    model = compiler.compile(plan_with_devices(graph, DEVICES, streamed=False), progress=False,
                             options=KernelOptions(tf32=False))
    batches = [feeds(graph, seed) for seed in range(3)]
    out = {}
    for on in (False, True):
        monkeypatch.setattr(small_copy, "SMALL_H2D_BY_KERNEL", on)
        with Session(model, slots=2) as s:
            out[on] = [s.run(f)["logits"] for f in batches] + [o["logits"] for o in s.run_pipelined(batches)]
            s.run(batches[0])
            assert ({e.mode for e in s.last_run_stats.edges if e.direction == "h2d"} == {"kernel"}) == on
    for a, b in zip(out[False], out[True]):
        np.testing.assert_array_equal(a, b)
