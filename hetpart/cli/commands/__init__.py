"""Subcommands of ``partition``; each module registers one.  Add a module here to add one."""

import importlib

MODULES = ("plan", "zoo", "profile", "costmodel", "tune", "bench")

for _m in MODULES:
    importlib.import_module(f"{__name__}.{_m}")
