"""The package's floors (docs/architecture.md), kept by import-linter's contracts in pyproject.toml.

A module imports peftsent modules at its top, only from its own floor or below, and no two modules import each
other, directly or through others (imports written inside functions count: grimp reads them all).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "peftsent"
#: third-party libraries that take seconds to import: only inside functions, so ``--help`` stays instant
HEAVY = ("torch", "transformers", "peft", "datasets", "sklearn", "matplotlib", "optuna", "pandas", "accelerate",
         "scipy", "onnx", "onnxruntime", "optimum", "fastapi", "uvicorn", "psycopg", "bitsandbytes")


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _function_nodes(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_import_linter_contracts_are_kept(capsys):
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, f"import-linter contracts broken (run lint-imports for the same report):\n{out[-4000:]}"
    assert "2 kept, 0 broken" in out


def test_every_module_sits_on_a_declared_floor():
    """The layers contract is exhaustive: a new module must be placed on a floor (pyproject.toml)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")
    assert layers["exhaustive"] is True
    declared = {name.strip() for layer in layers["layers"] for name in layer.split(":")}
    top_level = {p.stem if p.name != "__init__.py" else p.parent.name for p in PACKAGE.iterdir()
                 if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert top_level == declared


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_peftsent_imports_sit_at_module_top(path):
    """A file's first lines say what it depends on: no peftsent import hides in a function body."""
    tree = ast.parse(path.read_text())
    hidden = []
    for function in _function_nodes(tree):
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "peftsent"):
                hidden.append(f"line {node.lineno}: from {node.module} import ... in {function.name}()")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "peftsent" for a in node.names):
                hidden.append(f"line {node.lineno}: import {node.names[0].name} in {function.name}()")
    assert not hidden, "move these imports to the top of the module:\n" + "\n".join(hidden)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_heavy_libraries_are_imported_inside_functions(path):
    tree = ast.parse(path.read_text())
    top = []
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        top += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert not top, "import these inside the functions that use them (--help must stay instant):\n" + "\n".join(top)


def test_help_imports_no_heavy_library():
    """``python -m peftsent.<verb> --help`` for every verb loads none of the heavy libraries."""
    import subprocess

    from peftsent.__main__ import VERBS

    probe = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
             "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
             f"print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    for verb, (module, _) in VERBS.items():
        done = subprocess.run([sys.executable, "-c", probe, module], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        loaded = done.stdout.rpartition("LOADED ")[2].strip()
        assert loaded == "[]", f"peftsent {verb} --help imports {loaded}"
