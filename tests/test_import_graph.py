"""No import cycle inside fairseq_npu/: the graph is built from the source (ast), every import counted, also those
inside functions (a lazy import that closes a cycle still ties the two modules together)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fairseq_npu"


def _modules():
    """{'fairseq_npu.hooks.amp': path, 'fairseq_npu.hooks': .../hooks/__init__.py, ...}"""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph():
    """{module: {modules of fairseq_npu it imports}}. ``from P import X`` counts as an import of ``P.X`` when that
    is a module, else of ``P``. Importing a submodule also runs its parent packages' ``__init__``; those implicit
    edges are left out (every package would otherwise form a cycle with the modules it imports)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle as a list of modules (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_fairseq_npu_has_no_import_cycle():
    graph = import_graph()
    assert "fairseq_npu.hooks.amp" in graph["fairseq_npu.hooks"]  # the graph sees package-internal imports
    assert "fairseq_npu.device" in graph["fairseq_npu.hooks.trainer"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_patching_is_a_leaf():
    assert import_graph()["fairseq_npu.patching"] == set()


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


if __name__ == "__main__":
    pytest.main([__file__])


def test_optimizers_do_not_import_mixed_precision():
    # the optimizer is a kernel choice; who drives precision (apex or torch.amp) is decided in fairseq_npu.precision
    graph = import_graph()
    optim = [name for name in graph if name.startswith("fairseq_npu.optim")]
    assert "fairseq_npu.optim.fused_adamw" in optim
    assert {(m, dep) for m in optim for dep in graph[m] if dep.startswith("fairseq_npu.amp")} == set()
