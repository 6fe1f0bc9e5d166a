"""The suite itself: a test module that needs an optional extra skips, with a reason, when it is absent.

``pytest -q`` without the ``labelstudio`` extra (no httpx, no label-studio-sdk) must collect everything and
skip those tests; a module-level ``import httpx`` above its ``pytest.importorskip`` fails the whole collection
instead (it did, in two modules).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

OPTIONAL = {"httpx", "label_studio_sdk", "ray", "pyarrow"}  # the extras' modules (pyproject.toml)


def _imported(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return {node.module.split(".")[0]}
    return set()


def _skipped(node: ast.stmt) -> set[str]:
    """Modules a top-level ``pytest.importorskip("m", ...)`` (bare or assigned) skips on."""
    call = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "importorskip"
            and call.args and isinstance(call.args[0], ast.Constant)):
        return {str(call.args[0].value).split(".")[0]}
    return set()


def unguarded_imports(source: str) -> list[str]:
    """Optional modules imported at module level before a module-level importorskip of them."""
    guarded: set[str] = set()
    out = []
    for node in ast.parse(source).body:
        guarded |= _skipped(node)
        out += sorted((_imported(node) & OPTIONAL) - guarded)
    return out


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_optional_extras_are_imported_only_after_their_skip(path):
    assert unguarded_imports(path.read_text()) == [], f"{path.name}: import it after pytest.importorskip"


def test_the_check_says_no_to_an_import_above_its_skip():
    bad = 'import httpx\nimport pytest\npytest.importorskip("httpx")\n'
    good = 'import pytest\npytest.importorskip("httpx", reason="x")\nimport httpx\nfrom httpx import Client\n'
    assert unguarded_imports(bad) == ["httpx"] and unguarded_imports(good) == []
