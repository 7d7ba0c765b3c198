"""The house's shape, checked on the source: layers import downward only, no module imports another of ours
inside a function (the usual way to hide a circle), and no circle exists."""

import ast
from pathlib import Path

import dqn

PACKAGE = Path(dqn.__file__).parent
LAYER = {"cli": 4, "run": 3, "search": 2, "racing": 2, "report": 1, "tracking": 1}
"""Commands over orchestration over {search, racing} over {report, tracking} over the core (dqn/*.py, 0)."""
FORBIDDEN = {("report", "tracking"), ("tracking", "report"), ("search", "racing"), ("racing", "search")}
"""Same-layer or lower pairs that must not meet: the report reads runs it is handed, MLflow knows no report."""
COMMAND_ALIASES = {"dqn.train"}
"""`python -m dqn.train` is a command at the name users type: it may import the commands."""


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(module: str) -> tuple[str, int]:
    part = module.split(".")[1] if module.count(".") >= 1 else ""
    if module in COMMAND_ALIASES:
        return "cli", LAYER["cli"]
    return (part, LAYER[part]) if part in LAYER else ("core", 0)


def imports(path: Path) -> tuple[set[str], list[str]]:
    """The dqn modules `path` imports at module level, and those it imports inside a function."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:  # `from dqn.search import trial` names a module, `from dqn.stops import Pruned` a class
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            ours = [name for name in names if name == "dqn" or name.startswith("dqn.")]
            in_function = any(
                isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef))
                and any(child is node for child in ast.walk(parent))
                for parent in ast.walk(tree)
            )
            (nested.extend if in_function else top.update)(ours)
    return top, nested


def resolve(name: str, known: dict[str, Path]) -> str:
    """`dqn.search.trial.Pruned`-like names come from `from x import y`; keep the longest known module."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: {resolve(name, known) for name in imports(path)[0]} - {module} for module, path in known.items()}


def test_no_module_of_ours_is_imported_inside_a_function():
    nested = {module: imports(path)[1] for module, path in modules().items()}
    assert {module: names for module, names in nested.items() if names} == {}


def test_layers_import_downward_only():
    upward = []
    for module, targets in graph().items():
        (name, rank) = layer(module)
        for target in targets:
            (target_name, target_rank) = layer(target)
            if target_name != name and (target_rank > rank or (name, target_name) in FORBIDDEN):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_there_is_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []
