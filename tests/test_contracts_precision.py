"""Precision strings and values (:mod:`hetpart.contracts.precision`)."""

from __future__ import annotations

import pytest

from hetpart.contracts.precision import DEFAULT, FORMATS, Precision, coerce, parse
from hetpart.errors import PrecisionError


@pytest.mark.parametrize("text, cpu, cuda", [
    ("cuda=bf16,cpu=fp32", "fp32", "bf16"),
    ("cpu=bf16", "bf16", "tf32"),
    (" CUDA = fp16 ", "fp32", "fp16"),
    ("bf16", "bf16", "bf16"),
    ("tf32", "fp32", "tf32"),
    ("fp32", "fp32", "fp32"),
    ("", "fp32", "tf32"),
    (None, "fp32", "tf32"),
])
def test_parse(text, cpu, cuda):
    assert parse(text) == Precision(cpu=cpu, cuda=cuda)


@pytest.mark.parametrize("text, says", [
    ("cuda=bf8", "fp32, tf32, bf16, fp16"),
    ("gpu=bf16", "cpu, cuda"),
    ("cuda", "fp32, tf32, bf16, fp16"),
    ("cpu=tf32", "CUDA tensor-core format"),
    ("cuda=bf16,cuda=fp16", "twice"),
    ("cuda=bf16,", "DEVICE=FORMAT"),
])
def test_bad_strings_name_what_is_valid(text, says):
    with pytest.raises(PrecisionError, match=says):
        parse(text)


def test_default_is_what_hetpart_built_before():
    assert DEFAULT == Precision("fp32", "tf32") and DEFAULT.describe() == "cpu=fp32,cuda=tf32"


def test_json_round_trip_and_storage():
    for fmt in FORMATS:
        p = Precision(cpu="fp32" if fmt == "tf32" else fmt, cuda=fmt)
        assert Precision.from_json(p.to_json()) == p == parse(p.describe()) == coerce(p.describe())
    assert Precision.from_json(None) == DEFAULT
    assert Precision(cuda="bf16").storage("cuda") == "bfloat16"
    assert Precision(cuda="fp16").storage("cpu") == "float32"
    with pytest.raises(PrecisionError):
        Precision.from_json({"tpu": "bf16"})
    with pytest.raises(PrecisionError):
        coerce(3)
