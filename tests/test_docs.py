"""The README and docs/ hold what they promise: a short README, links and cited sections that exist,
`pipeline` commands the CLI accepts, and the test command CI runs."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import get_args_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
# Words that only make sense to whoever wrote the history, not to a reader of the docs.
IN_HOUSE = re.compile(r"\b(round|rounds|factor|yardstick|session|ninth|warm)\b|issue #", re.IGNORECASE)
# A citation: `BENCHMARKS.md, "Section"`, `README, "Section"` or `docs/page.md, "Section"`, possibly
# followed by more `, "Section"`.
CITATION = re.compile(r'\b(README|BENCHMARKS|docs/[\w-]+)(?:\.md)?, ("[^"\n]+"(?:, "[^"\n]+")*)')
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a `# comment` in code is no heading
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def bash_lines(path: Path) -> list[str]:
    """Each command line of the page's ```bash blocks, with backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def repo_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    wanted = [ROOT / name for name in listed
              if name.endswith((".py", ".yaml", ".md")) or name == ".ci/run"]
    return [p for p in wanted if p.is_file() and p != Path(__file__).resolve()]


def test_readme_is_a_ten_minute_read():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; at most 300 (move detail to docs/)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_in_house_words(page: Path):
    found = [f"{page.name}:{n}: {m.group(0)!r}" for n, line in enumerate(page.read_text().splitlines(), 1)
             for m in IN_HOUSE.finditer(line)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_exists(page: Path):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check offline
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif fragment and fragment not in {anchor(h) for h in headings(dest)}:
            broken.append(f"{target}: no heading with anchor #{fragment} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_cited_section_exists():
    pages = {"README": README, "BENCHMARKS": ROOT / "BENCHMARKS.md"}
    known: dict[Path, list[str]] = {}
    missing = []
    for path in repo_files():
        # A citation may wrap onto the next comment line: join lines (and their `#`) first.
        text = re.sub(r"\n\s*(#\s*)?", " ", path.read_text(errors="replace"))
        for m in CITATION.finditer(text):
            page = pages.get(m.group(1)) or ROOT / f"{m.group(1)}.md"
            if not page.exists():
                missing.append(f"{path.relative_to(ROOT)}: {m.group(0)}: no file {page.name}")
                continue
            titles = known.setdefault(page, [h.replace("`", "") for h in headings(page)])
            for section in re.findall(r'"([^"]+)"', m.group(2)):
                # A citation may name a heading by its start ("Pipeline overhead").
                if not any(t.startswith(section.replace("`", "")) for t in titles):
                    missing.append(f"{path.relative_to(ROOT)}: {page.name} has no section {section!r}")
    assert not missing, "\n".join(missing)


def pipeline_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for page in PAGES:
        for line in bash_lines(page):
            if "<" in line:  # a placeholder such as <run_id>: not a command to run as written
                continue
            words = shlex.split(line, comments=True)
            segment: list[str] = []
            for word in [*words, "&&"]:
                if word in {"&&", "||", ";", "|", "&"}:
                    while segment and re.match(r"^[A-Z_]+=", segment[0]):  # VAR=value before a command
                        segment.pop(0)
                    if segment and segment[0] == "pipeline":
                        commands.append((f"{page.name}: {line.strip()}", segment[1:]))
                    segment = []
                else:
                    segment.append(word)
    return commands


def test_the_docs_show_pipeline_commands():
    assert len(pipeline_commands()) >= 5  # the parser check below must have something to check


@pytest.mark.parametrize("where, args", pipeline_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_every_pipeline_command_in_the_docs_parses(where: str, args: list[str]):
    try:
        get_args_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `pipeline {' '.join(args)}` is refused by the CLI's parser")


def test_readme_test_command_is_what_ci_runs():
    lines = [line.split("#")[0].strip() for line in bash_lines(README)]
    test_command = next(line for line in lines if line.endswith("pytest"))
    assert test_command == "ruff check . && pytest"
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.strip().startswith("#")]
    steps = [step.strip() for step in test_command.split("&&")]
    positions = [ci.index(step) if step in ci else -1 for step in steps]
    assert -1 not in positions, f".ci/run lacks a line of the README's test command: {steps} in {positions}"
    assert positions == sorted(positions), f".ci/run runs {steps} out of the README's order"


def test_the_readme_model_example_registers_trains_and_takes_its_settings(monkeypatch):
    """README "Add a model", as written: its builder registers, builds, takes a training step, and
    its params.yaml lines parse."""
    import torch
    import yaml

    from pipeline.config import parse_params
    from pipeline.models import classic, registry
    from tests.conftest import shrunk_params_dict

    section = README.read_text().split("## Add a model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    settings = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, flags=re.DOTALL).group(1))
    registry.list_models()  # the families registered first, so that the example is the one added
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test
    exec(compile(code, "README.md", "exec"), dict(vars(classic)))  # in the family module it names
    (name,) = settings["train"]["mnist"]
    assert name in registry.list_models("mnist")
    model = registry.create_model(name)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    params = parse_params(shrunk_params_dict(models=["logreg"], train={"mnist": settings["train"]["mnist"]}))
    assert params.train_config("mnist", name).epochs == settings["train"]["mnist"][name]["epochs"]
