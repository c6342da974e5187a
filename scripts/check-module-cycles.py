#!/usr/bin/env python3
"""Fails when two of the crate's top-level modules import each other, directly or
through others. A module "imports" another when its code (tests and comments left out)
names `crate::other`, alone or inside a `use crate::{…}` group.

Usage: scripts/check-module-cycles.py [SRC]   (prints the module graph's cycles)
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
modules = {p.stem for p in src.glob("*.rs")} - {"lib", "main"}
modules |= {p.name for p in src.iterdir() if p.is_dir()}


def code_of(path):
    """The file's text without comments and without its test module."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"//[^\n]*", "", text)
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: cut.start()] if cut else text


imports = {m: set() for m in modules}
for path in src.rglob("*.rs"):
    top = path.relative_to(src).parts[0].removesuffix(".rs")
    if top not in modules or path.name == "tests.rs" or path.stem.endswith("_tests"):
        continue
    code = code_of(path)
    named = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
        named |= {part.strip().split("::")[0] for part in group.split(",")}
    imports[top] |= (named & modules) - {top}

# Depth-first search; a grey module met again closes a cycle.
state, trail, cycles = {}, [], []


def visit(module):
    state[module] = "grey"
    trail.append(module)
    for other in sorted(imports[module]):
        if state.get(other) == "grey":
            cycles.append(trail[trail.index(other):] + [other])
        elif other not in state:
            visit(other)
    trail.pop()
    state[module] = "black"


for module in sorted(modules):
    if module not in state:
        visit(module)

edges = sum(len(v) for v in imports.values())
for cycle in cycles:
    print("import cycle: " + " -> ".join(cycle))
print(f"{len(modules)} modules, {edges} imports, {len(cycles)} cycles")
sys.exit(1 if cycles else 0)
