"""What the dev tools write out beside their printed lines: the ``--json`` results file and the
``--md`` tables appended to a notes file (``from tool_output import save_json, append_md``; a tool
run as ``python tools/<tool>.py`` has this folder on ``sys.path``)."""

from __future__ import annotations

import json


def save_json(path: str | None, data) -> None:
    """Inputs: ``path`` (a tool's ``--json``; None or "" writes nothing) and JSON-able ``data``.
    Output: ``data`` written to ``path`` with ``indent=1`` (the file replaced)."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


def append_md(path: str | None, texts: list[str]) -> None:
    """Inputs: ``path`` (a tool's ``--md``; None or "" writes nothing) and the tables ``texts``.
    Output: the tables appended to ``path``, a blank line between two and a newline at the end."""
    if path:
        with open(path, "a") as fh:
            fh.write("\n\n".join(texts) + "\n")
