"""The README's layer table is true: every module of ``sbgc`` is listed, no import (also inside a function)
runs up a layer, and the modules import each other without a cycle."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "sbgc"


def layer_table() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The README's table, bottom layer first: per row (its units, e.g. ("sbgc.method",), its modules)."""
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (`sbgc\.[^|]*)\|([^|]*)\|", text, flags=re.M)
    assert rows, "README.md has no layer table (rows starting with | `sbgc.…`)"
    return [(tuple(re.findall(r"`(sbgc\.\w+)`", units)), tuple(re.findall(r"`(\w+)`", modules)))
            for units, modules in rows]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The table's unit of a module: ``sbgc.method.bound`` -> ``sbgc.method``; ``sbgc.cache`` -> itself."""
    return ".".join(module.split(".")[:2])


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported sbgc module, line, at module level?) for every import in a file, also inside functions."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if node.module == "sbgc" else node.module for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in top) for n in names if n == "sbgc" or n.startswith("sbgc.")]
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_table_lists_every_module_of_the_package():
    table = layer_table()
    units = [u for row, _ in table for u in row]
    assert len(units) == len(set(units)), f"a unit is listed twice: {units}"
    actual_units = {unit_of(m) for m in modules() if m != "sbgc"}
    assert actual_units == set(units), (f"not in the README's table: {sorted(actual_units - set(units))}; "
                                        f"listed but absent: {sorted(set(units) - actual_units)}")
    for row, listed in table:
        if len(row) == 1 and (PACKAGE / row[0].split(".")[1]).is_dir():
            actual = {m.split(".")[2] for m in modules() if m.startswith(row[0] + ".") and m.count(".") == 2} - {"__main__"}
            assert set(listed) == actual, f"{row[0]}: the README lists {sorted(listed)}, the package has {sorted(actual)}"


def test_no_import_runs_up_a_layer():
    level = {u: i for i, (row, _) in enumerate(layer_table()) for u in row}
    upward = []
    for name, path in modules().items():
        if name == "sbgc":
            continue
        for target, line, _ in imports_of(path):
            if target != "sbgc" and level[unit_of(target)] > level[unit_of(name)]:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert not upward, "imports that run up the README's layers:\n" + "\n".join(upward)


def test_the_module_level_imports_have_no_cycle():
    known = modules()
    graph = {}
    for name, path in known.items():
        targets = set()
        for target, _, at_top in imports_of(path):
            while target not in known and "." in target:  # `from sbgc.x import name` -> sbgc.x
                target = target.rsplit(".", 1)[0]
            if at_top and target != name:
                targets.add(target)
        graph[name] = targets
    state, cycles = {}, []

    def visit(node: str, stack: list[str]) -> None:  # depth first; an edge back to an open node closes a cycle
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds imports inside functions and ``from sbgc import x`` forms (what the checks rely on)."""
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom sbgc.method import bound\n\ndef g():\n    from sbgc import book\n    import sbgc.cache\n")
    assert imports_of(f) == [("sbgc.method", 2, True), ("sbgc.book", 5, False), ("sbgc.cache", 6, False)]
