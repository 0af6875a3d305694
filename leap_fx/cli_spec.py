"""What the ``leap-fx prune`` parser needs from ``PruneOptions`` and the method registry, without torch.

Reading them imports every method (torch and transformers: seconds), and ``leap-fx prune --help`` should
not wait for that. The spec (option names and types, method names, each method's own options with
their owners and help) is cached as JSON in ``$LEAP_FX_CACHE/cli`` (default ``~/.cache/leap-fx/cli``),
keyed by a hash of the files it is read from (``SOURCES``): an edited or added method module makes a
new key, so the cache cannot go stale. The first call after a change builds it (and imports torch);
an unwritable cache directory only costs that time again.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from typing import Optional

PACKAGE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("run/options.py", "masks/spec.py", "methods/*.py", "cli_spec.py")
VERSION = 1


def _type_name(annotation) -> str:
    t = str(annotation)
    return "float" if "float" in t else "int" if "int" in t else "bool" if "bool" in t else "str"


def fingerprint() -> str:
    """sha256 of the source files the spec is read from (names and contents)."""
    h = hashlib.sha256(f"v{VERSION}".encode())
    for pattern in SOURCES:
        for path in sorted(glob.glob(os.path.join(PACKAGE, pattern))):
            h.update(os.path.relpath(path, PACKAGE).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(fh.read() + b"\1")
    return h.hexdigest()


def cache_file(key: Optional[str] = None) -> str:
    root = os.environ.get("LEAP_FX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "leap-fx")
    return os.path.join(root, "cli", f"spec-{(key or fingerprint())[:20]}.json")


def build_spec() -> dict:
    """The spec, read from the classes themselves (imports the registry, hence torch)."""
    from dataclasses import fields

    from leap_fx.masks.spec import MaskSpec
    from leap_fx.methods import methods
    from leap_fx.methods.registry import own_fields
    from leap_fx.run.options import PruneOptions, pruning_methods

    options: dict[str, list] = {}
    for name in pruning_methods():
        cls = methods()[name].config_class
        for f in own_fields(cls, MaskSpec):
            kind, owners, text = options.get(f.name, (_type_name(f.type), [], ""))
            options[f.name] = [kind, owners + [name], text or getattr(cls, "HELP", {}).get(f.name, "")]
    return {"version": VERSION, "methods": pruning_methods(), "method_options": options,
            "prune_fields": [[f.name, _type_name(f.type)] for f in fields(PruneOptions) if f.name != "method_options"]}


def parser_spec() -> dict:
    """The spec for this process: read live where the registry is already imported (it may hold
    methods registered at run time, which no file shows), else ``cached_spec()``."""
    return build_spec() if "leap_fx.methods.registry" in sys.modules else cached_spec()


def cached_spec() -> dict:
    """The cached spec if it matches the sources, else a freshly built one (cached for next time)."""
    path = cache_file()
    try:
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        if isinstance(spec, dict) and spec.get("version") == VERSION:
            return spec
    except (OSError, ValueError):
        pass
    spec = build_spec()
    try:
        from passes.io import write_json
        write_json(path, spec)
    except OSError:
        pass  # read-only home: the spec is rebuilt each time, nothing else changes
    return spec
