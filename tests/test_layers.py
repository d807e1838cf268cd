"""The layers of grpo_core/ and evals/ have no back-arrows (issue 13).

Every import statement of every module (``ast``: top-level ones and those inside functions
alike) is an edge of the module import graph; ``from grpo_core import x`` is an edge to
grpo_core.x when x is a module. The graph must have no circle, evaluation must not import the
trainer, the bottom layer (schema, grader, tasks) imports only errors / registry / params /
schema / grader, and nothing in the core but its command line imports evals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("grpo_core", "evals")
# what the bottom layer may import from the project
BOTTOM = ("grpo_core.schema", "grpo_core.grader", "grpo_core.tasks")
BOTTOM_MAY_IMPORT = {
    "grpo_core",
    "grpo_core.errors",
    "grpo_core.registry",
    "grpo_core.params",
    "grpo_core.schema",
    "grpo_core.grader",
    "grpo_core.twx",  # the TextWorldExpress gateway (imports errors only)
    "grpo_core.gui",  # the generated GUI apps (imports errors only)
    "grpo_core.textworld_env",  # TextWorld games: generation and play (imports errors only)
    # the code task's grading: codeexec runs programs through the sandbox (errors only)
    "grpo_core.codeexec",
    "grpo_core.sandbox",
}
ENTRY_POINTS = {"grpo_core.cli"}  # the command line sits above both grpo_core and evals


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (``pkg/__init__.py`` is
    ``pkg``)."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (None: not ours)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def imports_of(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``mod`` imports anywhere in its file."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if (m := _known(a.name, modules)) is not None:
                    out.add(m)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            for a in node.names:
                m = _known(f"{base}.{a.name}", modules) or _known(base, modules)
                if m is not None:
                    out.add(m)
    out.discard(mod)
    return out


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    return {m: imports_of(m, f, modules) for m, f in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle [a, b, ..., a] of the graph, or None (depth-first search, sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state and (c := visit(m)) is not None:
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)) is not None:
            return c
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken layer rule, one line each (empty: the layers hold)."""
    bad: list[str] = []
    if (cycle := find_cycle(graph)) is not None:
        bad.append("import circle: " + " -> ".join(cycle))
    for m, deps in sorted(graph.items()):
        if m.split(".")[0] == "evals" and "grpo_core.trainer" in deps:
            bad.append(f"{m} imports grpo_core.trainer")
        if m in BOTTOM and (above := sorted(deps - BOTTOM_MAY_IMPORT)):
            bad.append(f"{m} (bottom layer) imports {', '.join(above)}")
        if m.split(".")[0] == "grpo_core" and m not in ENTRY_POINTS:
            if up := sorted(d for d in deps if d.split(".")[0] == "evals"):
                bad.append(f"{m} (core) imports {', '.join(up)}")
    return bad


# --------------------------------------------------------------------------------------------
# the checker itself, on small hand-made packages


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_graph_resolves_every_import_form(tmp_path):
    # pkg/a.py: `from pkg import b` (b a module: edge to pkg.b), `from pkg.c import f` (edge to
    # pkg.c), `import pkg.d.e` inside a function (edge to the module pkg.d), `from . import c`
    # (relative: pkg.c), `import os` (not ours: no edge). pkg/d.py imports nothing.
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": (
                "import os\nfrom pkg import b\nfrom pkg.c import f\nfrom . import c\n"
                "def g():\n    import pkg.d.e\n"
            ),
            "pkg/b.py": "X = 1\n",
            "pkg/c.py": "def f():\n    pass\n",
            "pkg/d.py": "",
        },
    )
    g = import_graph(tmp_path, ("pkg",))
    assert g == {
        "pkg": set(),
        "pkg.a": {"pkg.b", "pkg.c", "pkg.d"},
        "pkg.b": set(),
        "pkg.c": set(),
        "pkg.d": set(),
    }


def test_cycle_through_a_function_level_import_is_found(tmp_path):
    # a -> b at the top, b -> c at the top, c -> a inside a function: the circle a b c a
    _write(
        tmp_path,
        {
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "import pkg.c\n",
            "pkg/c.py": "def f():\n    from pkg.a import X\n",
        },
    )
    g = import_graph(tmp_path, ("pkg",))
    assert find_cycle(g) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert layer_violations(g) == ["import circle: pkg.a -> pkg.b -> pkg.c -> pkg.a"]
    del g["pkg.c"]
    assert find_cycle(g) is None


def test_layer_rules_name_each_back_arrow():
    # hand-made graph: evals.x imports the trainer, the schema imports config, the core's
    # rewards imports evals.x; the cli may import evals
    g = {
        "evals.x": {"grpo_core.trainer"},
        "grpo_core.trainer": set(),
        "grpo_core.schema": {"grpo_core.config", "grpo_core.errors"},
        "grpo_core.config": set(),
        "grpo_core.errors": set(),
        "grpo_core.rewards": {"evals.x"},
        "grpo_core.cli": {"evals.x"},
    }
    assert layer_violations(g) == [
        "evals.x imports grpo_core.trainer",
        "grpo_core.rewards (core) imports evals.x",
        "grpo_core.schema (bottom layer) imports grpo_core.config",
    ]


# --------------------------------------------------------------------------------------------
# the project


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    g = import_graph(ROOT)
    assert {"grpo_core.trainer", "grpo_core.advantages", "evals.evaluate"} <= set(g)
    assert "grpo_core.losses" in g["grpo_core.trainer"]  # edges are there to check
    return g


def test_no_import_circle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_evaluation_does_not_import_the_trainer(graph):
    assert [m for m, d in graph.items() if m.startswith("evals") and "grpo_core.trainer" in d] == []


def test_bottom_layer_imports_only_the_bottom(graph):
    for m in BOTTOM:
        assert m in graph, f"{m} is missing"
        assert graph[m] <= BOTTOM_MAY_IMPORT, f"{m} imports {sorted(graph[m] - BOTTOM_MAY_IMPORT)}"


def test_all_layer_rules_hold(graph):
    assert layer_violations(graph) == []
