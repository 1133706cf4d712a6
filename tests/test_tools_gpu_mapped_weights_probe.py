"""tools/gpu_mapped_weights_probe.py (issue 19): a weight-heavy kernel reading its weights from
device memory, from mapped pinned host memory (zero copy) or after a whole copy.

Without a GPU: ``--help``, the one-line typed error, and the whole probe in simulation at narrow
widths (the CPU target, host memory: every mode gives the same output and numpy's).  With a GPU
(``cuda`` mark): a dense decode GEMV and a gathered expert GEMV (hetpart's own rules) whose weight
is bound through the mapped device pointer of pinned host memory match ONNX Runtime on inputs
with negatives and zeros, and the probe's three modes agree bit for bit at narrow widths.

    PYTHONPATH=. python3 -m pytest -q tests/test_tools_gpu_mapped_weights_probe.py -m cuda
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import gpu_mapped_weights_probe as probe  # noqa: E402
from onnx_cases import model, onnxruntime_outputs  # noqa: E402

from hetpart.targets import cuda_available  # noqa: E402

E, K, N = 4, 256, 384


def test_help_works_here():
    with pytest.raises(SystemExit) as exc:
        probe.main(["--help"])
    assert exc.value.code == 0


@pytest.mark.skipif(cuda_available(), reason="checks the message shown where there is no GPU")
def test_without_a_gpu_it_says_so_in_one_line(capsys):
    assert probe.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "needs a CUDA GPU" in err and "Traceback" not in err


def test_simulated_probe_checks_every_mode(tmp_path):
    out = tmp_path / "probe.json"
    assert probe.main(["--simulate", "--small", "--copies", "2", "--calls", "3", "--sweeps", "1",
                       "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert (doc["schema"], doc["version"], doc["simulated"]) == (probe.SCHEMA, probe.VERSION, True)
    rows = {r["name"]: r for r in doc["kernels"]}
    assert set(rows) == {"moe_expert", "decode_gemv"}
    for r in rows.values():
        assert r["equal"] and r["ref_rel_err"] < 1e-5
        assert set(r["modes"]) == set(probe.MODES) and all(m["us"] > 0 for m in r["modes"].values())
    moe = rows["moe_expert"]
    assert moe["func"] == "gathered_matmul" and len(set(moe["ids"][0])) == 2
    assert moe["read_bytes"] * 4 == moe["weight_bytes"]  # two of eight experts
    assert rows["decode_gemv"]["read_bytes"] == rows["decode_gemv"]["weight_bytes"]


def test_repeated_module_calls_the_kernel_on_each_copy_in_turn():
    import tvm

    case = probe.pick("decode_gemv", probe.SMALL["decode_gemv"])
    main, pack = probe.build(probe.repeated_module(case.kmod, 3, 2), tvm.target.Target("llvm"), tvm.cpu())
    rng = np.random.default_rng(1)
    inputs, w0 = probe.values(case.kmod, rng)
    w1 = [w * -2 for w in w0]
    outs = main(*[tvm.runtime.tensor(a) for a in inputs],
                *[tvm.runtime.tensor(w) for w in pack(w0 + w1)])
    got = [o.numpy() for o in outs]
    ref = probe.reference(case, inputs, w0).reshape(got[0].shape)
    np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], -2 * ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[2], got[0])


# --- on a GPU ---------------------------------------------------------------------------
def _values(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    """Normal draws (negatives) with every 7th element zero, float32."""
    a = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    a.reshape(-1)[::7] = 0
    return a


def _dense():
    w = _values((K, N), 3, 0.1)
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", (1, 1, K), np.float32)],
              [("y", (1, 1, N), np.float32)], {"w": w})
    return m, w, {"x": _values((1, 1, K), 4)}


def _gathered():
    w = _values((E, K, N), 5, 0.1)
    nodes = [helper.make_node("Gather", ["w", "ids"], ["wg"], axis=0), helper.make_node("MatMul", ["x", "wg"], ["y"])]
    m = model(nodes, [("x", (1, 1, 1, K), np.float32), ("ids", (1, 2), np.int64)],
              [("y", (1, 2, 1, N), np.float32)], {"w": w})
    return m, w, {"x": _values((1, 1, 1, K), 6), "ids": np.array([[E - 1, 1]], np.int64)}


@pytest.mark.cuda
@pytest.mark.parametrize("make,rule", [(_dense, None), (_gathered, "GpuGatheredGemv")], ids=["dense", "gathered"])
def test_a_mapped_weight_matches_onnxruntime_on_the_gpu(monkeypatch, make, rule):
    import tvm

    from hetpart import importer
    from hetpart.costmodel import kernel_bench
    from hetpart.importer import expert_matmul
    from hetpart.targets import cuda_tvm_target

    monkeypatch.setattr(expert_matmul, "FUSE_EXPERT_GATHER", True)
    m, w, feeds = make()
    graph = importer.load(m)
    (kernel,) = [k for k in graph.kernels.values() if k.param_bytes]
    kmod = kernel_bench.single_kernel_module(graph, kernel)
    assert [tuple(a.shape) for a in kmod.args[kmod.num_inputs:]] == [w.shape]
    target, dev = cuda_tvm_target(), tvm.cuda(0)
    if rule is not None:
        assert probe.rule_of(kmod, target) == rule
    main, pack = probe.build(probe.repeated_module(kmod, 1, 1), target, dev)
    (bound,) = pack([w])
    backend = probe.Backend(simulate=False)
    try:
        mapped = backend.mapped(backend.pinned(bound, "w"))  # the kernel reads host memory over PCIe
        assert mapped.device.dlpack_device_type() == 2  # kDLCUDA
        ins = [tvm.runtime.tensor(feeds[i.name], dev) for i in m.graph.input]
        (got,) = [o.numpy() for o in main(*ins, mapped)]
        (res,) = [o.numpy() for o in main(*ins, tvm.runtime.tensor(bound, dev))]
    finally:
        backend.close()
    np.testing.assert_array_equal(got, res)  # one kernel, the same bytes: bit for bit
    np.testing.assert_allclose(got, onnxruntime_outputs(m, feeds)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_the_probe_modes_agree_on_the_gpu(tmp_path):
    out = tmp_path / "probe.json"
    assert probe.main(["--small", "--copies", "2", "--calls", "4", "--sweeps", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["kernels"]
    assert [r["name"] for r in rows] == ["moe_expert", "decode_gemv"]
    assert all(r["equal"] and r["ref_rel_err"] < 1e-4 for r in rows)
    assert rows[0]["rule"] == "GpuGatheredGemv"
