"""The tests mirror the package: a folder of tests for each layer of `streams/`."""

from __future__ import annotations

from tests.conftest import ROOT

# Layers whose tests live with another layer's, and where.
ELSEWHERE = {"catalogue": "tests/engine/test_registry.py (the catalogue beside the registry)"}


def test_each_layer_of_the_package_has_its_folder_of_tests() -> None:
    layers = {path.parent.name for path in (ROOT / "streams").glob("*/__init__.py")}
    folders = {path.parent.name for path in (ROOT / "tests").glob("*/__init__.py")}
    missing = layers - folders - set(ELSEWHERE)
    assert not missing, f"no tests/<layer>/ for {sorted(missing)}"
    assert all(list((ROOT / "tests" / name).glob("test_*.py")) for name in layers & folders)
