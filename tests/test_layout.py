"""The package's architecture, as a test: layers that import one way, no cycle, no torch below.

Every `import` in llmzip (at the top of a module or inside a function) is read from the
sources. A layer may import its own modules and the layers before it in `LAYERS`, never one
after it; no two modules import each other, directly or around a loop.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmzip"
LAYERS = [  # the order a dependency may point in: each may use those before it
    "errors", "files", "cache", "container",  # foundations: no model, no torch
    "models",  # which model a name means, its files and tokenizer
    "engine",  # the model behind one contract; exact arithmetic and its backends
    "parallel",  # the processes of one job
    "codec",  # a file to an archive and back
    "tools",  # comparisons and reports
    "llmzip",  # the public API (llmzip/__init__.py)
    "cli", "__main__",  # the command line
]
NO_TORCH = ["container", "models.tokens", "codec.rangecoder", "codec.segments", "codec.repeats"]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The modules `name` imports: llmzip's by their module name, others by their top."""
    tree = ast.parse(MODULES[name].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names
                       if f"{node.module}.{a.name}" in MODULES)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{name}: relative import (write llmzip.… in full)")
    return {m for m in out if m in MODULES} | {m.split(".")[0] for m in out if m not in MODULES}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1] if len(parts) > 1 else "llmzip")


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_only_to_this_layer_or_earlier_ones(module):
    later = [m for m in _imports(module) if m in MODULES and _layer(m) > _layer(module)]
    assert not later, f"{module} imports {later}, a later layer"


def test_no_module_imports_another_that_imports_it_back():
    graph = {m: {i for i in _imports(m) if i in MODULES and i != m
                 and not m.startswith(i + ".")}  # a module's own package (its __init__)
             for m in MODULES}
    seen, on_path = set(), []

    def visit(m):
        if m in on_path:
            raise AssertionError(" -> ".join(on_path[on_path.index(m):] + [m]))
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        on_path.pop()

    for m in sorted(graph):
        visit(m)


@pytest.mark.parametrize("module", NO_TORCH)
def test_archive_bytes_tokens_and_the_coder_never_import_torch(module):
    """A damaged archive is refused, and a file cut and tokenized, before torch loads."""
    assert not {"torch", "transformers"} & _imports(f"llmzip.{module}")


def test_the_bench_harness_is_not_in_the_wheel():
    assert not (PACKAGE / "bench").exists() and "llmzip.measure" not in MODULES
