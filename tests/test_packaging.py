"""Packaging: everything the package reads at run time ships inside it, and an installed wheel works.

The fast tests check the recipes are found through :mod:`importlib.resources` from any working directory,
that the ``package-data`` globs of ``pyproject.toml`` cover every non-Python file under ``src/medclass``, and
that a wheel built from those sources really holds them. The slow test runs ``.ci/wheel-check`` (build, install
into a fresh venv, train/predict/export/serve from an empty folder), which CI also runs directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import pytest

import medclass
from medclass.config import find_recipe, list_recipes, read_yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "medclass"
SHIPPED_RECIPES = {"default", "best", "hires"}


def _runtime_files() -> set[str]:
    """Every non-Python file under ``src/medclass`` (relative to ``src``, POSIX), caches excluded."""
    out = set()
    for path in PACKAGE.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".py", ".pyc"):
            continue
        out.add(path.relative_to(SRC).as_posix())
    return out


def _package_data() -> dict[str, list[str]]:
    """``[tool.setuptools.package-data]`` of ``pyproject.toml``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"].get("package-data", {})


def _glob_matches(package_data: dict[str, list[str]]) -> dict[tuple[str, str], set[str]]:
    """Files (relative to ``src``) each ``(package, pattern)`` of ``package-data`` selects, as setuptools globs them.

    A key names a package (``medclass`` or ``medclass.recipes``; ``*`` or ``""``: every package) and its
    patterns are globs relative to that package's folder.
    """
    out: dict[tuple[str, str], set[str]] = {}
    for key, patterns in package_data.items():
        if key in ("", "*"):
            roots = [p for p in PACKAGE.rglob("*") if p.is_dir() and "__pycache__" not in p.parts] + [PACKAGE]
        else:
            roots = [SRC.joinpath(*key.split("."))]
        for pattern in patterns:
            out[(key, pattern)] = {
                p.relative_to(SRC).as_posix() for root in roots for p in root.glob(pattern) if p.is_file()
            }
    return out


def test_recipes_found_from_the_package_in_an_empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/recipes here
    monkeypatch.delenv("MEDCLASS_RECIPES_DIR", raising=False)
    assert set(list_recipes()) >= SHIPPED_RECIPES
    shipped = Path(str(files("medclass") / "recipes")).resolve()
    for name in SHIPPED_RECIPES:
        path = find_recipe(name).resolve()
        assert path.parent == shipped, path
        assert path.is_relative_to(Path(medclass.__file__).resolve().parent)
        assert isinstance(read_yaml(path), dict) and read_yaml(path)


def test_env_recipes_dir_is_searched_before_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "default.yaml").write_text("train:\n  epochs: 3\n", encoding="utf-8")
    (mine / "tiny.yaml").write_text("train:\n  epochs: 1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDCLASS_RECIPES_DIR", str(mine))
    assert find_recipe("default") == mine / "default.yaml"
    assert set(list_recipes()) >= SHIPPED_RECIPES | {"tiny"}


def test_package_data_globs_cover_every_runtime_file() -> None:
    package_data = _package_data()
    matches = _glob_matches(package_data)
    covered = set().union(*matches.values()) if matches else set()
    runtime = _runtime_files()
    assert {"medclass/py.typed", "medclass/recipes/default.yaml"} <= runtime  # the walk sees the real tree
    missing = sorted(runtime - covered)
    assert not missing, f"not shipped in the wheel (add to [tool.setuptools.package-data]): {missing}"
    dead = sorted(f"{key}: {pattern}" for (key, pattern), hit in matches.items() if not hit)
    assert not dead, f"package-data globs matching no file: {dead}"


def test_the_package_does_not_read_files_from_the_checkout() -> None:
    """No module climbs out of the package with ``__file__`` (``parents[n]``, ``..``), which a wheel lacks."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if "__file__" in code and ("parents[" in code or ".parent.parent" in code or '".."' in code):
                offenders.append(f"{path.relative_to(SRC)}:{lineno}: {line.strip()}")
    assert not offenders, offenders


@pytest.mark.skipif(
    int(version("setuptools").split(".")[0]) < 77, reason="an offline wheel build needs setuptools>=77 in this venv"
)
def test_built_wheel_holds_every_runtime_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "src" / "medclass", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = dist.glob("medclass-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_runtime_files() - names)
    assert not missing, f"missing from {wheel.name}: {missing}"
    modules = {p.relative_to(SRC).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert not sorted(modules - names), sorted(modules - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "medclass = medclass.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_wheel_check_end_to_end(shared_data: Path) -> None:
    data = shared_data / "medmnist"
    if not (data / "breastmnist.npz").is_file():
        pytest.skip(f"{data / 'breastmnist.npz'} not found")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDCLASS_RECIPES_DIR")}
    env["MEDCLASS_DATA_DIR"] = str(data)
    env["PYTHON"] = sys.executable  # the venv holding medclass's dependencies
    result = subprocess.run(
        [str(REPO / ".ci" / "wheel-check")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "wheel-check: PASS" in output
