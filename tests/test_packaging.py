"""pyproject.toml declares every third-party package that pipeline/ imports directly."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.conftest import REPO


def _top_level_imports() -> set[str]:
    names = set()
    for path in (REPO / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"pipeline", "__future__"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_directly_imported_package_is_declared():
    declared = {_canonical(re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0])
                for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()  # import name -> distributions
    imported = _top_level_imports()
    assert {"torch", "scipy", "sqlalchemy", "yaml", "PIL"} <= imported  # the scan sees them
    undeclared = {name: providers.get(name) for name in imported
                  if not {_canonical(d) for d in providers.get(name, [name])} & declared}
    assert undeclared == {}
