"""CONSENTWATCH_NATIVE=off: import this package's modules from their sources only.

Python's path finder prefers an extension module to a `.py` of the same name, so a
compiled build (streams/native.py) would load however the variable is set. This finder
goes first for `streams.*` and knows only source and bytecode loaders.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["install"]

_LOADERS = [
    (importlib.machinery.SourceFileLoader, importlib.machinery.SOURCE_SUFFIXES),
    (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
]


class _SourcesOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("streams.") or path is None:
            return None
        for entry in path:
            spec = importlib.machinery.FileFinder(entry, *_LOADERS).find_spec(fullname)
            if spec is not None:
                return spec
        return None


def install() -> None:
    if not any(isinstance(finder, _SourcesOnly) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourcesOnly())
