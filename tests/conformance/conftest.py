"""The fast loop (``-m "not slow"``) does not even collect the node-test module: it
generates the onnx package's ~1,900 cases when imported (~15 s), and all its tests are
slow-marked anyway."""

from __future__ import annotations


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == "test_backend_node_conformance.py":
        return "not slow" in (config.option.markexpr or "") or None
    return None
