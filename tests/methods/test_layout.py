"""The layout's rules: every method is in the registry, and no baseline depends on LoREIN's
method module (a change to LoREIN must not silently change a baseline)."""

import ast
from pathlib import Path

import lorein.methods.baselines as baselines
from lorein.methods.base import Method
from lorein.methods.registry import METHODS

SOURCES = Path(baselines.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_baseline_imports_loreins_method_module() -> None:
    files = sorted(SOURCES.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        # "from lorein.methods.lorein import method" is seen as ...lorein.method as well
        imported = _imports(path)
        assert not any(m.startswith("lorein.methods.lorein.method") for m in imported), path.name


def test_every_method_class_is_registered() -> None:
    registered = {type(m) for m in METHODS.values()}
    defined = set()
    for path in [*SOURCES.glob("*.py"), SOURCES.parent / "lorein" / "method.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id == "Method" for b in node.bases
            ):
                defined.add(node.name)
    assert {cls.__name__ for cls in registered} == defined
    assert all(isinstance(m, Method) for m in METHODS.values())
