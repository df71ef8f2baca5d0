"""Imports flow one way, and this test says so (DESIGN.md §1).

The rule, for every module of the packages ``pipeline``, ``stream``, ``ui`` and ``bench``:

1. **Layers.** Top to bottom: ``bench → ui → stream → pipeline`` (→ libraries). A module imports its own
   package and packages below it, never one above: ``pipeline`` imports no ``stream``/``ui``/``bench``,
   ``stream`` no ``ui``/``bench``, ``ui`` no ``bench``. ``bench`` is the top floor: nothing imports it.
2. **Training stays aside.** ``stream`` never imports ``pipeline.train`` (the trainer, the evaluator, the
   card writer; the server lists models through ``pipeline.cards``), and no ``pipeline`` module outside
   ``pipeline/train/`` imports it (train imports the stages, never the other way round).
3. **The web part of ui is thin.** Every ``ui`` module except the CLI side (``ui/cli.py`` and
   ``ui/cmd_*.py``, the composition root) reaches no ``pipeline`` module, directly or through the modules
   it imports (so it may import ``stream.protocol``, which imports only ``stream.records``), and nothing
   it reaches imports torch (``torch``, ``torchvision``, ``facenet_pytorch``, ``pytorch_grad_cam``).
4. **No circles.** No import cycle between modules, of any length.

What counts as an import: every ``import``/``from ... import`` anywhere in a module (top level, inside
functions — the lazy imports that keep ``dff --help`` fast — and under ``if TYPE_CHECKING:``), plus
``importlib.import_module(...)``/``__import__(...)`` calls with a literal name. TYPE_CHECKING-only imports
count: an annotation that names an upper layer still ties the layers together (a reader, a type checker
and the next refactor must all follow it), and a circle drawn only for the type checker is still a circle
(the ``aggregate ↔ track`` one was exactly that). ``from pkg import name`` imports the module ``pkg.name``
when there is one, else ``pkg``; relative imports are resolved. A package's ``__init__`` that Python runs
on the way to a submodule is not an edge (ours import nothing of the project). Starting another process
(``dff bench`` runs ``python -m bench``) is not an import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("pipeline", "stream", "ui", "bench")  # bottom to top
TORCH = frozenset({"torch", "torchvision", "facenet_pytorch", "pytorch_grad_cam"})


@dataclass(frozen=True, slots=True)
class Import:
    """``source`` imports ``target`` at ``line`` of ``path``; ``target`` is a project module, or the
    top-level name of a library (``torch``, ``numpy``)."""

    source: str
    target: str
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def find_modules(root: Path, packages: Sequence[str] = LAYERS) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file (``pkg/__init__.py`` is ``pkg``)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _project_module(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a project module (``pipeline.models.X`` ->
    ``pipeline.models``), or None for a library."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def _target(name: str, modules: Mapping[str, Path]) -> str:
    return _project_module(name, modules) or name.split(".")[0]


def imports_of(module: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """Every import in ``path`` (see the module docstring for what counts), resolved to modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def add(name: str, node: ast.AST) -> None:
        target = _target(name, modules)
        if target != module:
            found.append(Import(module, target, path, getattr(node, "lineno", 0)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else base, node)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                add(node.args[0].value, node)
    return found


def import_graph(root: Path, packages: Sequence[str] = LAYERS) -> tuple[dict[str, Path], list[Import]]:
    modules = find_modules(root, packages)
    edges = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    return modules, edges


def _layer(module: str) -> str:
    return module.split(".")[0]


def is_cli_side(module: str) -> bool:
    """``ui.cli`` and ``ui.cmd_*``: the composition root, which may reach into every layer below."""
    name = module.split(".")
    return len(name) == 2 and name[0] == "ui" and (name[1] == "cli" or name[1].startswith("cmd_"))


def layer_violations(edges: Iterable[Import], root: Path, layers: Sequence[str] = LAYERS) -> list[str]:
    """Rules 1 and 2 of the module docstring, one line per offending import."""
    rank = {name: i for i, name in enumerate(layers)}
    out = []
    for imp in edges:
        src, dst = _layer(imp.source), _layer(imp.target)
        if dst not in rank:
            continue  # a library
        if rank[dst] > rank[src]:
            out.append(f"{imp.where(root)}: {imp.source} imports {imp.target}, a layer above it ({src} < {dst})")
        is_train = imp.target == "pipeline.train" or imp.target.startswith("pipeline.train.")
        source_in_train = imp.source == "pipeline.train" or imp.source.startswith("pipeline.train.")
        if is_train and (src == "stream" or (src == "pipeline" and not source_in_train)):
            out.append(f"{imp.where(root)}: {imp.source} imports {imp.target}; only ui's CLI side may use train")
    return out


def web_ui_violations(modules: Mapping[str, Path], edges: Sequence[Import], root: Path) -> list[str]:
    """Rule 3: from each web-part ui module, follow project imports; no pipeline module, no torch."""
    graph: dict[str, list[Import]] = {}
    for imp in edges:
        graph.setdefault(imp.source, []).append(imp)
    out = []
    for start in sorted(m for m in modules if _layer(m) == "ui" and not is_cli_side(m)):
        chain: dict[str, list[str]] = {start: [start]}  # module -> how start reaches it
        todo = [start]
        while todo:
            module = todo.pop()
            for imp in graph.get(module, []):
                path = [*chain[module], imp.target]
                if imp.target in TORCH:
                    out.append(f"{imp.where(root)}: web ui reaches torch: {' -> '.join(path)}")
                elif imp.target in modules and _layer(imp.target) == "pipeline":
                    out.append(f"{imp.where(root)}: web ui reaches pipeline: {' -> '.join(path)}")
                elif imp.target in modules and imp.target not in chain:
                    chain[imp.target] = path
                    todo.append(imp.target)
    return sorted(set(out))


def cycles(modules: Iterable[str], edges: Iterable[Import]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each sorted; a module importing
    itself is not counted."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in edges:
        if imp.target in graph and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_violations(modules: Iterable[str], edges: Sequence[Import], root: Path) -> list[str]:
    out = []
    for component in cycles(modules, edges):
        members = set(component)
        inside = sorted(
            f"{imp.source} -> {imp.target} ({imp.where(root)})"
            for imp in edges
            if imp.source in members and imp.target in members
        )
        out.append(f"import cycle between {', '.join(component)}: " + "; ".join(inside))
    return out


def check(root: Path, layers: Sequence[str] = LAYERS) -> list[str]:
    """Every violation of the module docstring's rule under ``root``, one line each (empty: clean)."""
    modules, edges = import_graph(root, layers)
    return (
        layer_violations(edges, root, layers)
        + web_ui_violations(modules, edges, root)
        + cycle_violations(modules, edges, root)
    )


# -- the project ------------------------------------------------------------------------------------------


def test_the_project_imports_flow_one_way_with_no_cycles() -> None:
    problems = check(ROOT)
    assert not problems, "the import rule (tests/test_architecture.py docstring) is broken:\n" + "\n".join(problems)


def test_the_checker_sees_the_whole_project() -> None:
    """Guards the guard: the packages are found, and lazy and TYPE_CHECKING imports are read."""
    modules, edges = import_graph(ROOT)
    assert {"pipeline.run", "stream.server", "ui.cli", "ui.app", "bench.suite"} <= set(modules)
    pairs = {(e.source, e.target) for e in edges}
    assert ("ui.cmd_analyze", "pipeline.engine") in pairs  # a function-level import
    assert ("ui.cli", "ui.cmd_analyze") in pairs  # `from ui import cmd_analyze` names the module
    assert ("pipeline.models", "torch") in pairs  # libraries keep their top-level name


# -- the checker on a tiny tree that breaks every rule ------------------------------------------------


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for package in LAYERS:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").touch()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CLEAN = {
    "pipeline/types.py": "import numpy\n",
    "pipeline/train/__init__.py": "",
    "pipeline/train/card.py": "from pipeline import types\n",
    "stream/records.py": "import json\n",
    "stream/protocol.py": "from .records import *\n",
    "stream/server.py": "from pipeline.types import X\nfrom stream import protocol\n",
    "ui/client.py": "from stream import protocol as p\n",
    "ui/app.py": "import gradio\nfrom ui.client import connect\n",
    "ui/cli.py": "def main():\n    from pipeline.train.card import write\n    import torch\n",
    "ui/cmd_serve.py": "from stream.server import app\nfrom ui.app import build\n",
    "bench/run.py": "from ui.client import connect\nfrom pipeline.types import X\nimport torch\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # pipeline importing up, lazily inside a function
            {"pipeline/run.py": "def f():\n    from stream.protocol import Done\n"},
            ["pipeline/run.py:2: pipeline.run imports stream.protocol, a layer above it (pipeline < stream)"],
        ),
        (  # stream importing ui, only for the type checker
            {"stream/jobs.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ui import app\n"},
            ["stream/jobs.py:3: stream.jobs imports ui.app, a layer above it (stream < ui)"],
        ),
        (  # ui importing bench, by a literal import_module
            {"ui/cmd_bench.py": "import importlib\nimportlib.import_module('bench.run')\n"},
            ["ui/cmd_bench.py:2: ui.cmd_bench imports bench.run, a layer above it (ui < bench)"],
        ),
        (  # stream reaching training code, by a relative-looking absolute import
            {"stream/routes.py": "from pipeline.train import card\n"},
            ["stream/routes.py:1: stream.routes imports pipeline.train.card; only ui's CLI side may use train"],
        ),
        (  # a stage importing training code
            {"pipeline/run.py": "import pipeline.train.card\n"},
            ["pipeline/run.py:1: pipeline.run imports pipeline.train.card; only ui's CLI side may use train"],
        ),
        (  # the web ui reaching pipeline through another ui module
            {"ui/app.py": "from ui.helpers import f\n", "ui/helpers.py": "def f():\n    import pipeline.types\n"},
            [
                "ui/helpers.py:2: web ui reaches pipeline: ui.app -> ui.helpers -> pipeline.types",
                "ui/helpers.py:2: web ui reaches pipeline: ui.helpers -> pipeline.types",
            ],
        ),
        (  # the web ui reaching torch through stream
            {"ui/app.py": "from stream import heavy\n", "stream/heavy.py": "import torch.nn\n"},
            ["stream/heavy.py:1: web ui reaches torch: ui.app -> stream.heavy -> torch"],
        ),
        (  # a circle of two, one side only for the type checker (today's aggregate <-> track was this)
            {
                "pipeline/aggregate.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from pipeline.track import Obs\n",
                "pipeline/track.py": "from . import aggregate\n",
            },
            [
                "import cycle between pipeline.aggregate, pipeline.track: pipeline.aggregate -> pipeline.track "
                "(pipeline/aggregate.py:3); pipeline.track -> pipeline.aggregate (pipeline/track.py:1)"
            ],
        ),
        (  # a circle of three through a lazy import
            {
                "stream/a.py": "import stream.b\n",
                "stream/b.py": "from stream.c import x\n",
                "stream/c.py": "def f():\n    from stream import a\n",
            },
            [
                "import cycle between stream.a, stream.b, stream.c: stream.a -> stream.b (stream/a.py:1); "
                "stream.b -> stream.c (stream/b.py:1); stream.c -> stream.a (stream/c.py:2)"
            ],
        ),
    ],
    ids=[
        "lazy-upward",
        "type-checking-upward",
        "import-module-bench",
        "stream-train",
        "pipeline-train",
        "web-ui-pipeline",
        "web-ui-torch",
        "cycle-of-two",
        "cycle-of-three",
    ],
)
def test_the_checker_finds_each_broken_rule(tmp_path: Path, files: Mapping[str, str], expected: list[str]) -> None:
    assert check(_tree(tmp_path, {**CLEAN, **files})) == expected
