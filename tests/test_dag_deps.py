"""dvc.yaml's code deps cannot lie: each stage lists every project module its command imports.

For each stage command `pipeline <stage> ...` the modules are found statically from
pipeline/<stage>.py: every `import` (module level or inside a function), followed transitively,
with the packages each import runs (`__init__.py`) and the `python -m pipeline.<module>` children
a module starts. A dep covers a module when it is the module's file or a folder above it. cli.py
is left out: it only parses arguments and dispatches, and listing it would re-run every stage
for a new help text. Package files with no code (empty, or a docstring only) need no listing.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGE = "pipeline"


def module_file(name: str) -> Path | None:
    base = REPO / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path) -> set[str]:
    """Every dotted name an import statement of `path` may load, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, `level - 1` packages up
                base = ".".join(package.split(".")[: len(package.split(".")) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # `from a import b`: b is a module or a name in a; both are tried.
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, (ast.List, ast.Tuple)):  # subprocess argv: [..., "-m", "pipeline.x", ...]
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            found.update(v for prev, v in zip(values, values[1:]) if prev == "-m" and isinstance(v, str))
    return {n for n in found if n.split(".")[0] == PACKAGE}


@functools.cache
def imported_files(module: str) -> frozenset[Path]:
    """The project files that importing `module` runs (its own, its packages', its imports')."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imported_names(path))
    return frozenset(seen)


def _needs_listing(path: Path) -> bool:
    if path.name != "__init__.py":
        return True
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def stage_code(dvc_yaml: Path) -> dict[str, tuple[str, list[str]]]:
    """stage (or foreach group) -> (the module its command runs, its deps)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        body = stage.get("do", stage)
        words = str(body["cmd"]).split()
        assert words[0] == PACKAGE and len(words) > 1, f"stage {name}: expected `pipeline <stage> ...`, got {words}"
        module = f"{PACKAGE}.{words[1]}"
        assert module_file(module) is not None, f"stage {name}: {module} not found"
        out[name] = (module, [str(d).rstrip("/") for d in body.get("deps", [])])
    return out


def _covers(dep: str, rel: str) -> bool:
    return rel == dep or rel.startswith(dep + "/")


def missing_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """stage -> imported project files its deps do not cover."""
    gaps = {}
    for name, (module, deps) in stage_code(dvc_yaml).items():
        rels = sorted(str(p.relative_to(REPO)) for p in imported_files(module) if _needs_listing(p))
        missing = [rel for rel in rels if not any(_covers(d, rel) for d in deps)]
        if missing:
            gaps[name] = missing
    return gaps


def unused_code_deps(dvc_yaml: Path) -> dict[str, list[str]]:
    """stage -> code deps (under pipeline/) that cover no file its command imports."""
    unused = {}
    for name, (module, deps) in stage_code(dvc_yaml).items():
        rels = [str(p.relative_to(REPO)) for p in imported_files(module)]
        extra = [d for d in deps if _is_code(d) and not any(_covers(d, r) for r in rels)]
        if extra:
            unused[name] = extra
    return unused


def _is_code(dep: str) -> bool:
    """A dep under pipeline/ holding Python; a folder without any (the report's templates) is
    data its stage reads."""
    path = REPO / dep
    return dep.split("/")[0] == PACKAGE and not (path.is_dir() and not any(path.rglob("*.py")))


def test_every_stage_lists_every_module_its_command_imports():
    assert missing_deps(REPO / "dvc.yaml") == {}


def test_every_code_dep_is_imported_by_its_stage():
    assert unused_code_deps(REPO / "dvc.yaml") == {}


def test_function_level_and_package_imports_are_followed():
    files = {str(p.relative_to(REPO)) for p in imported_files("pipeline.train")}
    # The registry imports each family module inside _load_families(). (The dataset registry finds
    # its modules by reading pipeline/data, which no import shows: every stage lists that folder.)
    assert {"pipeline/config/__init__.py", "pipeline/models/__init__.py", "pipeline/models/registry.py",
            "pipeline/models/lenet.py", "pipeline/data/datasets.py", "pipeline/errors.py"} <= files
    # train's MLflow child: `python -m pipeline.tracking.run_log`, a string in an argv list.
    assert "pipeline/tracking/run_log.py" in files


@pytest.mark.parametrize("stage", ["download", "prepare"])
def test_the_data_stages_import_no_model(stage):
    """A change to a model's code must not re-run a download (Kaggle's takes minutes) or a split."""
    files = {str(p.relative_to(REPO)) for p in imported_files(f"pipeline.{stage}")}
    assert not [f for f in files if f.startswith(("pipeline/models/", "pipeline/engine/", "pipeline/tracking/"))]


def test_removing_any_code_dep_is_caught(tmp_path):
    """Each code dep of each stage, removed from a copy of dvc.yaml, makes the check name that
    stage and a module the dep covered."""
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())
    checked = 0
    for name, stage in raw["stages"].items():
        body = stage.get("do", stage)
        for dep in [d for d in body["deps"] if _is_code(d)]:
            copy = yaml.safe_load((REPO / "dvc.yaml").read_text())
            copy_body = copy["stages"][name].get("do", copy["stages"][name])
            copy_body["deps"].remove(dep)
            (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(copy))
            gaps = missing_deps(tmp_path / "dvc.yaml")
            assert list(gaps) == [name], f"removing {dep} from {name}: {gaps}"
            assert all(_covers(dep, rel) for rel in gaps[name]), gaps
            checked += 1
    assert checked >= 6 * 5  # every stage group has several
