from __future__ import annotations

from ..registry import register


@register
class Zoo:
    """List the built-in models (use them as zoo:NAME or zoo:NAME:small).

    Each model is built in code with seeded random weights; nothing is downloaded.
    """

    name = "zoo"

    def add_arguments(self, parser):
        pass

    def run(self, args) -> int:
        from ... import models

        for name in models.names():
            print(f"{name:<10} {models.describe(name)}")
        return 0
