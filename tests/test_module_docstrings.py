"""Every module says what it is for, what it exports and what it must not import (STYLE.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "segloop"
MODULES = sorted(SRC.rglob("*.py"))
# "Must not import ...", or the positive form for the bottom modules ("Imports only ...")
SAYS_WHAT_NOT = re.compile(r"must not|never import|imports no|imports only|standard library only",
                           re.IGNORECASE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_has_docstring_all_and_import_rule(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc, "no module docstring"
    names = {t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
             if isinstance(t, ast.Name)}
    assert "__all__" in names, "no __all__"
    if path.name != "__init__.py" or path.parent == SRC:
        assert SAYS_WHAT_NOT.search(doc), "the docstring does not say what it must not import"
