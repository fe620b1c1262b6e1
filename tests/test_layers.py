"""The package's import graph (docs/conventions.md, "Layers"): no circle between its parts and
no import from a lower layer up to a higher one, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a part may import its own layer's other parts (without a circle) and lower layers
LAYERS = [
    {
        "mvseg",
        "mvseg.checkpoint_io",
        "mvseg.resume",
        "mvseg.wandb_offline",
        "mvseg.threads",
        "mvseg.ops",
        "triton_kernels",
    },
    {"mvseg.video"},
    {"mvseg.data", "mvseg.models", "mvseg.losses"},
    {"mvseg.strategies"},
    {"mvseg.runtime"},
    {
        "mvseg.predict",
        "mvseg.sweep",
        "mvseg.fuzz",
        "mvseg.prerequisites",
        "mvseg.bench",
        "mvseg.summary",
        "mvseg.run_dir",
    },
    {"mvseg.cli"},
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """mvseg.video.decode -> mvseg.video (a subpackage is one part); mvseg.cli -> mvseg.cli."""
    bits = module.split(".")
    if bits[0] == "triton_kernels":
        return "triton_kernels"
    return ".".join(bits[:2]) if len(bits) >= 2 else bits[0]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """part -> the parts it imports (anywhere in its files, functions included)."""
    graph: dict[str, set[str]] = {}
    for path in [*(root / "mvseg").rglob("*.py"), *(root / "triton_kernels").rglob("*.py")]:
        rel = path.relative_to(root).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        src = part_of(module)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            )
            for name in names:
                if name.split(".")[0] in ("mvseg", "triton_kernels"):
                    dst = part_of(name)
                    if dst != src:
                        graph.setdefault(src, set()).add(dst)
    return graph


def test_every_part_has_a_layer():
    parts = set(import_graph()) | {d for ds in import_graph().values() for d in ds}
    assert parts <= set(LAYER), sorted(parts - set(LAYER))


def test_no_import_goes_up_a_layer():
    up = sorted(f"{a} -> {b}" for a, ds in import_graph().items() for b in ds if LAYER[b] > LAYER[a])
    assert up == []


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(
                    " -> ".join(stack[stack.index(nxt) :] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}"
                )
            elif not state.get(nxt):
                visit(nxt, stack + [node])
        state[node] = 2

    for n in sorted(graph):
        if not state.get(n):
            visit(n, [])
    assert circles == []


def test_the_check_finds_a_circle_and_an_upward_import(tmp_path):
    # the same functions on a made-up tree: strategies importing the CLI is both
    fake = tmp_path / "mvseg"
    for f, text in {
        "__init__.py": "",
        "cli.py": "from mvseg.strategies import x\n",
        "strategies/__init__.py": "def f():\n    from mvseg.cli import main\n",
    }.items():
        (fake / f).parent.mkdir(parents=True, exist_ok=True)
        (fake / f).write_text(text)
    (tmp_path / "triton_kernels").mkdir()
    graph = import_graph(tmp_path)
    assert graph == {"mvseg.cli": {"mvseg.strategies"}, "mvseg.strategies": {"mvseg.cli"}}
    assert LAYER["mvseg.cli"] > LAYER["mvseg.strategies"]  # the second edge goes up


# compiled kernels (numba), where one loop nest is one function on purpose
LONG_FUNCTIONS_ALLOWED = {"mvseg/video/raster_jit.py:_kernel"}


def test_no_function_in_the_package_is_over_100_lines():
    long = []
    for path in sorted((ROOT / "mvseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.name}"
                if node.end_lineno - node.lineno + 1 > 100 and where not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{where} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
