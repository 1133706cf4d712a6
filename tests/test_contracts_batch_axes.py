"""BatchAxes: where the batch sits, found from shapes at two batch sizes (plain data, no model)."""

from __future__ import annotations

import pytest

from hetpart.contracts.batch_axes import BatchAxes, batch_axes
from hetpart.errors import NoBatchDimError, ShapeError


def test_axes_follow_the_batch_and_shared_inputs_have_none():
    axes = batch_axes({"x": (8, 3), "table": (100, 4)}, {"y": (8, 2), "t": (5, 8)}, 8,
                      {"x": (4, 3), "table": (100, 4)}, {"y": (4, 2), "t": (5, 4)}, 4)
    assert axes == BatchAxes({"x": 0, "table": None}, {"y": 0, "t": 1})
    assert axes.split_inputs == {"x": 0}
    assert BatchAxes.from_json(axes.to_json()) == axes


def test_no_input_with_a_batch_axis_is_no_batch_dim():
    with pytest.raises(NoBatchDimError, match="no input changes with the batch"):
        batch_axes({"x": (1, 3)}, {"y": (1, 2)}, 8, {"x": (1, 3)}, {"y": (1, 2)}, 4)


def test_output_without_a_batch_axis_cannot_be_merged():
    """A detector's kept boxes: their count does not follow the batch."""
    with pytest.raises(NoBatchDimError, match="output 'boxes' has no batch axis") as info:
        batch_axes({"x": (8, 3)}, {"boxes": (100, 4)}, 8, {"x": (4, 3)}, {"boxes": (100, 4)}, 4)
    assert isinstance(info.value, ShapeError)


def test_an_axis_that_is_not_the_batch_is_refused():
    with pytest.raises(NoBatchDimError, match="not one axis of the batch's size"):
        batch_axes({"x": (8, 16)}, {"y": (8,)}, 8, {"x": (4, 8)}, {"y": (4,)}, 4)
    with pytest.raises(NoBatchDimError, match="rank"):
        batch_axes({"x": (8, 3)}, {"y": (8,)}, 8, {"x": (4, 3, 1)}, {"y": (4,)}, 4)
    with pytest.raises(ValueError):
        batch_axes({"x": (8,)}, {"y": (8,)}, 8, {"x": (8,)}, {"y": (8,)}, 8)
