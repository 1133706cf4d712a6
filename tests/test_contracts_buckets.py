"""BucketSpec: the bucket grid, the choice of bucket for a feed, the JSON form, ``--buckets``."""

from __future__ import annotations

import json

import pytest

from hetpart.contracts.buckets import DEFAULT_BATCH_SIZES, BucketSpec, parse_buckets
from hetpart.errors import ShapeError

SPEC = BucketSpec(sizes={"batch": (1, 4, 16), "seq": (32, 128)}, input_axes={"ids": {0: "batch", 1: "seq"}},
                  output_axes={"logits": {0: "batch", 1: "seq"}}, batch="batch")


def test_grid_is_every_combination_smallest_first():
    grid = SPEC.grid()
    assert len(grid) == 6
    assert grid[0] == {"batch": 1, "seq": 32} and grid[-1] == {"batch": 16, "seq": 128}
    volumes = [b["batch"] * b["seq"] for b in grid]
    assert volumes == sorted(volumes)


@pytest.mark.parametrize("actual, want", [
    ({"batch": 1, "seq": 32}, {"batch": 1, "seq": 32}),     # exact fit: no padding
    ({"batch": 2, "seq": 1}, {"batch": 4, "seq": 32}),
    ({"batch": 4, "seq": 33}, {"batch": 4, "seq": 128}),
    ({"batch": 5, "seq": 100}, {"batch": 16, "seq": 128}),
])
def test_choose_takes_the_smallest_bucket_that_holds_the_feed(actual, want):
    assert SPEC.choose(actual) == want


def test_a_feed_larger_than_the_largest_bucket_names_the_dim_and_the_buckets():
    with pytest.raises(ShapeError) as e:
        SPEC.choose({"batch": 17, "seq": 8})
    msg = str(e.value)
    assert "'batch' is 17" in msg and "batch=1,4,16" in msg and "at most 16" in msg


def test_max_batch_is_the_largest_batch_bucket():
    assert SPEC.max_batch == 16
    assert BucketSpec(sizes={"seq": (8,)}, input_axes={"x": {1: "seq"}}).max_batch is None


def test_json_round_trip():
    again = BucketSpec.from_json(json.loads(json.dumps(SPEC.to_json())))
    assert again == SPEC and again.grid() == SPEC.grid()


@pytest.mark.parametrize("broken", [
    {"sizes": {"batch": [4, 1]}},                              # not increasing
    {"sizes": {"batch": [0, 1]}},                              # not positive
    {"input_axes": {"ids": {"0": "nosuchdim"}}},               # a dim without sizes
])
def test_a_malformed_spec_is_refused(broken):
    d = dict(SPEC.to_json(), **broken)
    with pytest.raises(ValueError):
        BucketSpec.from_json(d)


def test_parse_buckets():
    assert parse_buckets(["batch=1,8,32", "seq=128"]) == {"batch": [1, 8, 32], "seq": [128]}
    for bad in ("batch", "=1,2", "batch=1,x", "batch=0,2"):
        with pytest.raises(ShapeError, match="--buckets"):
            parse_buckets([bad])


def test_default_batch_buckets_are_powers_of_two_up_to_32():
    assert DEFAULT_BATCH_SIZES == (1, 2, 4, 8, 16, 32)
