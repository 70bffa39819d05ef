"""The floors of DESIGN.md: the backbone (models/ofa) imports nothing above it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ofa_ext"
# What models/ofa may import from the package: itself and the floors below it.
BACKBONE_MAY_IMPORT = ("ofa_ext.models.ofa", "ofa_ext.utils", "ofa_ext.data", "ofa_ext.metrics")


def imported_modules(source: str, package: str) -> list:
    """(absolute name, line) of the ofa_ext modules a file of ``package`` imports (relative resolved)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] if node.module or not node.level else [f"{name}.{a.name}" for a in node.names]
            out += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return [(n, line) for n, line in out if n.split(".")[0] == "ofa_ext"]


def test_backbone_imports_nothing_above_it():
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
           for path in sorted((PACKAGE / "models" / "ofa").rglob("*.py"))
           for name, line in imported_modules(path.read_text(), ".".join(path.relative_to(PACKAGE.parent).parts[:-1]))
           if not any(name == ok or name.startswith(ok + ".") for ok in BACKBONE_MAY_IMPORT)]
    assert not bad, bad


def test_the_checker_resolves_relative_imports():
    """The rule above can fail: upward imports, relative or absolute, come out by their full names."""
    source = ("from .config import read_attr\nfrom ...utils import safe_load\nfrom . import archs\n"
              "def f():\n    from ..registered import OFAConfig\n    import ofa_ext.api\n")
    assert [n for n, _ in imported_modules(source, "ofa_ext.models.ofa")] == [
        "ofa_ext.models.ofa.config", "ofa_ext.utils", "ofa_ext.models.ofa.archs", "ofa_ext.models.registered",
        "ofa_ext.api"]
