"""Import-graph check of asr_kd: no import cycle, and no module importing a layer above its own.

Layers, bottom to top: errors/io/logs/config -> distill, data -> models, stages -> asr, image ->
commands -> cli. Every import counts, also those inside functions (a lazy import hides a cycle,
it does not remove it).

    python tools/check_imports.py        # exit 1 and one line per problem when there is one
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "errors": 0,
    "io": 0,
    "logs": 0,
    "config": 0,
    "distill": 1,
    "data": 1,
    "models": 2,
    "stages": 2,
    "asr": 3,
    "image": 3,
    "commands": 4,
    "cli": 5,
    "__main__": 6,
    "__init__": 0,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, name: str) -> set[str]:
    out = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("asr_kd")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("asr_kd"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def main() -> int:
    files = {module_name(p): p for p in (ROOT / "asr_kd").rglob("*.py")}
    graph = {m: {i for i in imports(p, m) if i in files and i != m} for m, p in files.items()}
    problems = []

    def layer(m: str) -> int:
        parts = m.split(".")
        return LAYERS.get(parts[1] if len(parts) > 1 else "__init__", 0)

    for m, deps in graph.items():
        for d in deps:
            if d != "asr_kd" and layer(d) > layer(m):
                problems.append(f"{m} imports {d}, a layer above it")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d == "asr_kd":
                continue
            if state.get(d) == 1:
                problems.append("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
