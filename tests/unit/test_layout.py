"""The habits of DESIGN.md that a machine can check: layering and a thin function_app.py."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_shared_never_imports_azure_functions_or_durable():
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p)
                                                  if n.startswith(("azure.functions", "azure.durable_functions")))
                 for p in (ROOT / "shared").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_function_app_only_registers_blueprints():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the module docstring
        if isinstance(node, ast.Assign) and ast.unparse(node.value).startswith("df.DFApp("):
            continue
        assert isinstance(node, ast.Expr) and ast.unparse(node).startswith("app.register_functions("), \
            ast.unparse(node)


def test_every_module_starts_with_a_one_line_docstring():
    missing = []
    for folder in ("shared", "functions", "devhost"):
        for path in (ROOT / folder).rglob("*.py"):
            doc = ast.get_docstring(ast.parse(path.read_text()))
            if not doc or "\n" in doc.strip().split("\n\n")[0]:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_deployment_package_excludes_local_tooling():
    ignored = (ROOT / ".funcignore").read_text().split()
    for folder in ("devhost", "tests", "bench"):
        assert folder in ignored
