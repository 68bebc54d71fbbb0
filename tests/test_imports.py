"""The package's import layers, read from the source with `ast` (nothing is imported): no module
imports a layer above its own, no stage imports another, and no module reaches itself through
its imports.

Every import counts, at the top of a module or inside a function (a deferred import is still a
dependency), and so does each package __init__ Python runs on the way (importing
pipeline.config.schema runs pipeline/config/__init__.py); imports under `if TYPE_CHECKING:` only
name types and never run, so they do not.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# Top to bottom: a module may import its own layer and those below it. The first prefix that
# matches a module's name gives its layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # The CLI starts every stage: the one module that imports them.
    ("cli", ("pipeline.cli", "pipeline.__main__")),
    # One module per stage (`pipeline <stage>`); none imports another.
    ("stages", ("pipeline.download", "pipeline.prepare", "pipeline.train", "pipeline.evaluate",
                "pipeline.report", "pipeline.register", "pipeline.predict", "pipeline.stages")),
    ("reporting", ("pipeline.reporting", "pipeline.selection")),
    ("engine", ("pipeline.engine",)),
    # The MLflow store and runs: the engine resumes an interrupted run through it.
    ("tracking", ("pipeline.tracking",)),
    ("models", ("pipeline.models",)),
    ("config", ("pipeline.config",)),
    ("data", ("pipeline.data",)),
    ("leaf", ("pipeline.errors", "pipeline.speedups", "pipeline.artifacts", "pipeline")),
]
STAGES = dict(LAYERS)["stages"]
# The model registry imports its family modules to find them, and each family registers its
# models with the registry's decorator: a circle by design, the one allowed.
REGISTRY_CIRCLE = "pipeline.models.registry"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in it but under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(_resolve(alias.name, known) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    submodule = f"{child.module}.{alias.name}"
                    found.add(submodule if submodule in known else _resolve(child.module, known))
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {name for name in found if name}


def _resolve(name: str, known: set[str]) -> str:
    """The innermost project module a dotted name is (or lies in); "" when not the project's."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def layer_of(module: str) -> int:
    for k, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return k
    raise AssertionError(f"{module}: in no layer of tests/test_imports.py; add it to one")


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    found = modules(package)
    known = set(found)
    return {name: {m for imported in imports_of(path, known) for m in _with_packages(imported, name, known)}
            for name, path in found.items()}


def _with_packages(imported: str, importer: str, known: set[str]) -> set[str]:
    """`imported` and the packages Python runs on the way to it (pipeline.config's __init__ for
    pipeline.config.schema), less those the importer itself lies in (already running)."""
    found = set()
    name = imported
    while name:
        if name in known and not (importer == name or importer.startswith(name + ".")):
            found.add(name)
        name = name.rpartition(".")[0]
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
                  for module, imported_set in graph.items() for imported in imported_set
                  if layer_of(imported) < layer_of(module))


def stage_crossings(graph: dict[str, set[str]]) -> list[str]:
    def stage(module: str) -> str | None:
        return next((p for p in STAGES if module == p or module.startswith(p + ".")), None)

    return sorted(f"{module} imports {imported}" for module, imported_set in graph.items()
                  for imported in imported_set
                  if stage(module) and stage(imported) and stage(module) != stage(imported))


def circles(graph: dict[str, set[str]]) -> list[str]:
    """Each import circle found by a depth-first walk, as "a -> b -> a" (the model registry and
    its family modules aside)."""
    families = {REGISTRY_CIRCLE, *(m for m in graph if m.startswith("pipeline.models.")
                                   and REGISTRY_CIRCLE in graph[m])}

    def allowed(a: str, b: str) -> bool:
        return {a, b} <= families and REGISTRY_CIRCLE in (a, b)

    edges = {m: {n for n in imported if not allowed(m, n)} for m, imported in graph.items()}
    found: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        path.append(module)
        for nxt in sorted(edges.get(module, ())):
            if state.get(nxt) == 1:
                found.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            walk(module)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_walk_sees_the_package_and_its_deferred_imports(graph):
    """The walk itself: it finds the modules, function-level imports and `from pkg import mod`."""
    assert {"pipeline.cli", "pipeline.errors", "pipeline.data.datasets", "pipeline.config.loading"} <= set(graph)
    # crack imports imagefolder as `from pipeline.data import imagefolder`: a module, not the package.
    assert "pipeline.data.imagefolder" in graph["pipeline.data.crack"]
    # A function-level import: the registry reads a prepare report through artifacts on demand.
    assert "pipeline.artifacts" in graph["pipeline.data.datasets"]
    # datasets.py names the config's Params under TYPE_CHECKING only: not an import.
    assert "pipeline.config" not in graph["pipeline.data.datasets"]


def test_no_module_imports_a_layer_above_its_own(graph):
    assert not upward_imports(graph), "imports of a layer above:\n  " + "\n  ".join(upward_imports(graph))


def test_no_stage_imports_another_stage(graph):
    assert not stage_crossings(graph), "stages importing stages:\n  " + "\n  ".join(stage_crossings(graph))


def test_no_import_circle(graph):
    assert not circles(graph), "import circles:\n  " + "\n  ".join(circles(graph))


def test_a_circle_an_upward_import_and_a_stage_crossing_are_caught(tmp_path):
    """The checks on a made-up package: a data module importing config in a function (a circle
    and an upward import), a stage importing another; the registry's own circle passes."""
    files = {
        "__init__.py": "", "config/__init__.py": "", "data/__init__.py": "", "models/__init__.py": "",
        "config/loading.py": "from pipeline.data import datasets\n",
        "data/datasets.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pipeline.train\n"
                            "def f():\n    from pipeline.config.loading import x\n",
        "train.py": "import pipeline.evaluate\n", "evaluate.py": "",
        "models/registry.py": "def load():\n    from pipeline.models import lenet\n",
        "models/lenet.py": "from pipeline.models.registry import register_model\n",
    }
    for name, text in files.items():
        (tmp_path / "pipeline" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pipeline" / name).write_text(text)
    made = import_graph(tmp_path / "pipeline")
    # TYPE_CHECKING left out; pipeline.config's __init__ runs on the way to its module.
    assert made["pipeline.data.datasets"] == {"pipeline.config", "pipeline.config.loading"}
    assert upward_imports(made) == ["pipeline.data.datasets (data) imports pipeline.config (config)",
                                    "pipeline.data.datasets (data) imports pipeline.config.loading (config)"]
    assert circles(made) == ["pipeline.config.loading -> pipeline.data.datasets -> pipeline.config.loading"]
    assert stage_crossings(made) == ["pipeline.train imports pipeline.evaluate"]
