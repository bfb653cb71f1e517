"""The architecture stays visible: the core never imports the tools, and no module imports itself back
through others (every import counted, module-level or inside a function)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"edgedec": "edgedec", "export": "edgedec.export", "runtimes": "edgedec.runtimes",
            "models": "edgedec.models", "tools": "edgedec_tools"}
CORE = ("edgedec", "export", "runtimes", "models")


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package] + parts)] = f
    return found


def imports(name: str, path: Path, known) -> set[str]:
    """Modules of ours that `name` imports (a package import counts as its __init__)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out |= {t for t in targets if t in known and t != name}
    return out


def test_the_core_never_imports_the_tools():
    known = modules()
    core = {n: p for n, p in known.items() if not n.startswith("edgedec_tools")}
    for name, path in core.items():
        bad = {m for m in imports(name, path, known) if m.startswith("edgedec_tools")}
        assert not bad, f"{name} imports {bad}"


def test_no_import_cycles():
    known = modules()
    graph = {n: imports(n, p, known) for n, p in known.items()}
    # a package's __init__ importing its own submodules (re-exports) is not a cycle through the code
    graph = {n: {m for m in deps if not (m.startswith(n + ".") and known[n].name == "__init__.py")}
             for n, deps in graph.items()}
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
