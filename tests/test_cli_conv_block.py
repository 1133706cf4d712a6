"""``partition MODEL --conv-block N``: an all-CPU plan built with its convolutions in
NCHW{N}c (importer.conv_layout), recorded in the artifact and matching ONNX Runtime; a
bad block, a plan with a partition off the CPU, and shape buckets are one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blocked_conv_cases import four_conv_model  # noqa: E402

from hetpart.cli.main import main  # noqa: E402


def cli(capsys, *argv):
    rc = main([*argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "blocked.onnx"
    onnx.save(four_conv_model(1, 7), str(path))
    return path


def test_conv_block_compiles_an_all_cpu_plan_that_matches_ort(capsys, tmp_path, model_path):
    import onnxruntime as ort

    import hetpart

    out_dir = tmp_path / "out"
    rc, out, err = cli(capsys, str(model_path), "--conv-block", "8", "-o", str(out_dir), "--compile")
    assert rc == 0, err
    assert "NCHW8c" in out
    compiled = hetpart.load_compiled(out_dir)
    assert compiled.conv_block == 8 and {p.device for p in compiled.plan.partitions} == {"cpu"}
    x = np.random.default_rng(3).standard_normal((1, 8, 7, 7)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    with hetpart.Session(out_dir) as session:
        got = list(session.run({"x": x}).values())[0]
    want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.mark.parametrize("argv, words", [
    (["--conv-block", "12"], ["--conv-block 12", "8, 16, 32, auto", "or off"]),
    (["--conv-block", "eight"], ["--conv-block eight", "8, 16, 32, auto", "or off"]),
    (["--conv-block", "8", "--pin", "node_2=cuda"], ["--conv-block 8", "all-CPU", "off the CPU: cuda ("]),
    (["--conv-block", "8", "--buckets", "batch=1,2"], ["--conv-block 8", "--buckets"]),
])
def test_conv_block_mistakes_are_one_line_errors(capsys, model_path, argv, words):
    rc, out, err = cli(capsys, str(model_path), *argv)
    assert rc == 1, err
    assert err.startswith("partition: error:") and err.count("\n") == 1, err
    for w in words:
        assert w in err


def test_conv_block_auto_is_this_cpus_lanes():
    from hetpart.cli.options import parse_conv_block
    from hetpart.importer.conv_layout import host_block

    assert parse_conv_block("auto") == parse_conv_block(" AUTO ") == host_block()
    assert parse_conv_block("16") == 16 and parse_conv_block(None) is None
    assert parse_conv_block("off") == parse_conv_block(" NCHW ") == 0


ALL_CPU = ["--pin", "Conv=cpu", "--pin", "Relu=cpu", "--pin", "Add=cpu"]


@pytest.mark.parametrize("lanes, argv, block", [
    (16, [], 16),                          # AVX-512: all-CPU plans default to NCHW16c
    (16, ["--conv-block", "off"], None),   # ... unless told otherwise
    (8, [], None),                         # AVX2: NCHW unless asked
])
def test_all_cpu_plans_default_to_the_blocked_layout_on_avx512(capsys, tmp_path, model_path, monkeypatch,
                                                               lanes, argv, block):
    import hetpart
    from hetpart.importer import conv_layout

    monkeypatch.setattr(conv_layout, "host_block", lambda target=None: lanes)
    out_dir = tmp_path / "out"
    rc, out, err = cli(capsys, str(model_path), *ALL_CPU, *argv, "-o", str(out_dir), "--compile")
    assert rc == 0, err
    assert ("the all-CPU default on this CPU" in out) == (block is not None), out
    compiled = hetpart.load_compiled(out_dir)
    assert compiled.conv_block == block and {p.device for p in compiled.plan.partitions} == {"cpu"}


def test_the_default_block_needs_avx512_a_convolution_and_the_switch(monkeypatch):
    from hetpart import load
    from hetpart.importer import conv_layout

    conv, mlp = load(four_conv_model(1, 7)), load("zoo:mlp:small")
    monkeypatch.setattr(conv_layout, "host_block", lambda target=None: 16)
    assert conv_layout.default_block(conv) == 16 and conv_layout.default_block(mlp) is None
    monkeypatch.setattr(conv_layout, "DEFAULT_ON_AVX512", False)
    assert conv_layout.default_block(conv) is None
    monkeypatch.setattr(conv_layout, "DEFAULT_ON_AVX512", True)
    monkeypatch.setattr(conv_layout, "host_block", lambda target=None: 8)
    assert conv_layout.default_block(conv) is None
