"""The layout docs/ and sweeps/__init__.py describe: imports flow one way (sweeps.grid -> sweeps.run ->
sweeps.data -> models; the fitter and models import no sweeps), and the packages hold importable code, not
measurement scripts or measured results."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sweeps", "models", "parscale_law", "analysis", "conf")


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a file imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


# Each layer and what it must not import: the layers above it.
FORBIDDEN = {
    "sweeps/data": ("sweeps.run", "sweeps.grid", "sweeps.launch", "sweeps.train", "sweeps.prepare"),
    "sweeps/run": ("sweeps.grid", "sweeps.launch", "sweeps.report", "sweeps.collect", "sweeps.status"),
    "models": ("sweeps", "analysis", "benchmarks", "experiments"),
    "parscale_law": ("sweeps", "models", "analysis", "benchmarks", "experiments"),
}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_imports_flow_one_way(folder):
    wrong = [f"{path.relative_to(REPO)} imports {name}"
             for path in sorted((REPO / folder).rglob("*.py"))
             for name in sorted(imported_modules(path))
             if name.startswith(FORBIDDEN[folder]) and not name.startswith(("sweeps.errors", "sweeps.files"))]
    assert wrong == []


def test_no_package_imports_a_measurement_script():
    wrong = [f"{path.relative_to(REPO)} imports {name}"
             for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
             for name in imported_modules(path) if name.startswith(("benchmarks", "experiments"))]
    assert wrong == []


def test_packages_hold_no_scripts_or_measured_results():
    """Measured results live in results/ (named by what, where and when), research data beside its script
    in experiments/; a package's data files are only those its code reads (listed in pyproject.toml)."""
    package_data = {"parscale_law/data", "sweeps/grid/memory_calibration.json", "conf", "analysis/reference",
                    "analysis/gallery"}
    stray = [str(path.relative_to(REPO)) for package in PACKAGES for path in (REPO / package).rglob("*")
             if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
             and not any(str(path.relative_to(REPO)).startswith(kept) for kept in package_data)]
    assert stray == []
    assert not [path.name for package in PACKAGES for path in (REPO / package).rglob("*benchmark*.py")]
