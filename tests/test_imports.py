"""Package boundaries, read from the source: the shared contracts are a leaf, data code imports no model code, and
there is no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "datamodules", "lightning_modules", "shards", "benchmarks", "studies")
LEAF = "contracts"  # what data, model and study share: the catalogue, the sample schema, ranges, outcomes, files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [ROOT / "train.py", ROOT / "study.py"] + [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return {module_name(p): p for p in files}


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports, at any depth of the file (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports(path, modules) for name, path in modules.items()}


def test_data_code_imports_no_model_code() -> None:
    wrong = {
        name: sorted(d for d in deps if d.split(".")[0] == "lightning_modules")
        for name, deps in graph().items()
        if name.split(".")[0] in ("datamodules", "shards")
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_the_contracts_import_nothing_of_the_project() -> None:
    wrong = {
        name: sorted(d for d in deps if d.split(".")[0] != LEAF)
        for name, deps in graph().items()
        if name.split(".")[0] == LEAF
    }
    assert wrong and not {k: v for k, v in wrong.items() if v}, wrong


def test_the_families_agree_between_catalogue_and_schema() -> None:
    from contracts.catalogue import FAMILIES
    from contracts.fields import FAMILY_FIELDS

    assert set(FAMILY_FIELDS) == set(FAMILIES)


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(edges.get(name, ())):
            if dep == name or dep.startswith(name + "."):  # a package importing its own submodule
                continue
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, name, dep])}"
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [])


def test_the_checker_sees_a_cycle_and_a_wrong_import(tmp_path: Path) -> None:
    """The two rules would fail on code that breaks them (the parser reads function-level imports)."""
    modules = {"datamodules.a": tmp_path / "a.py", "lightning_modules.core": tmp_path / "core.py"}
    modules["datamodules.a"].write_text("def f():\n    from lightning_modules.core import x\n")
    assert imports(modules["datamodules.a"], modules) == {"lightning_modules.core"}
