"""BucketSpec: the bucket grid, the choice of bucket for a feed, the JSON form, ``--buckets``."""

from __future__ import annotations

import json

import pytest

import numpy as np

from hetpart.contracts.buckets import DEFAULT_BATCH_SIZES, BucketSpec, parse_buckets, rows_of_batch
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
    nms = BucketSpec(sizes={"batch": (1, 4)}, input_axes={"x": {0: "batch"}}, batch="batch",
                     batch_columns={"selected_indices": 0})
    assert BucketSpec.from_json(json.loads(json.dumps(nms.to_json()))) == nms
    old = {k: v for k, v in SPEC.to_json().items() if k != "batch_columns"}  # a manifest from before them
    assert BucketSpec.from_json(old) == SPEC


def test_rows_of_batch_keeps_a_row_range_and_rebases_its_column():
    """NonMaxSuppression rows (batch, class, box) of a batch of 4: rows of batch 1-2
    come out as a 2-row request's, numbered 0-1, in their order."""
    sel = np.array([[0, 0, 5], [1, 0, 7], [2, 1, 3], [1, 1, 0], [3, 0, 9], [2, 0, 1]], dtype=np.int64)
    got = rows_of_batch(sel, 0, 1, 3)
    np.testing.assert_array_equal(got, [[0, 0, 7], [1, 1, 3], [0, 1, 0], [1, 0, 1]])
    assert rows_of_batch(sel, 0, 4, 8).shape == (0, 3)  # padding's rows: none asked for
    assert sel[1, 0] == 1  # the runner's array is left alone
    with pytest.raises(ShapeError, match="batch column 3"):
        rows_of_batch(sel, 3, 0, 1)


@pytest.mark.parametrize("broken", [
    {"sizes": {"batch": [4, 1]}},                              # not increasing
    {"sizes": {"batch": [0, 1]}},                              # not positive
    {"input_axes": {"ids": {"0": "nosuchdim"}}},               # a dim without sizes
    {"batch_columns": {"logits": 0}},                          # an output with a batch axis too
    {"batch_columns": {"sel": -1}},                            # no such column
    {"batch": "", "batch_columns": {"sel": 0}},                # no batch dim to count rows of
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
