"""The CLI package's shape: no import cycle with the core, one exit-code table that docs/cli.md states,
and a start-up that loads nothing heavy."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import facelens.errors
import facelens.server.errors
from facelens.cli import _exit_code

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"


def _python(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running CODE (a real process: nothing cached by pytest)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, env=env, timeout=120, check=True, cwd=ROOT).stdout
    modules: list[str] = json.loads(out.splitlines()[-1])
    return modules


def test_cli_package_core_and_service_do_not_import_the_cli() -> None:
    """facelens.audit and facelens.server are below the CLI: importing them must not load facelens.cli (the
    old cycle: audit/commands.py and server/cli.py imported helpers from facelens.cli)."""
    modules = _python("import facelens.audit.run, facelens.server.app, facelens.server.keys, facelens.engine")
    assert "facelens.server.app" in modules and "facelens.audit.run" in modules  # the import itself happened
    assert [m for m in modules if m == "facelens.cli" or m.startswith("facelens.cli.")] == []


def test_cli_package_start_up_imports_nothing_heavy() -> None:
    """`facelens --help` must stay fast: importing the CLI and every command module loads no engine, numpy,
    onnxruntime, FAISS, scipy, FastAPI or uvicorn (they load inside the commands that need them)."""
    modules = _python("import facelens.cli, facelens.cli.images, facelens.cli.collection, facelens.cli.audit, "
                      "facelens.cli.service")
    assert "facelens.cli.service" in modules
    heavy = ("numpy", "onnxruntime", "faiss", "scipy", "fastapi", "uvicorn", "PIL", "facelens.engine",
             "facelens.store", "facelens.audit", "facelens.server.app")
    assert [m for m in modules if m in heavy] == []


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in or exported by facelens.errors and facelens.server.errors."""
    found: dict[str, type[BaseException]] = {}
    for module in (facelens.errors, facelens.server.errors):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__.startswith("facelens"):
                found[name] = cls
    return found


def _documented_codes() -> dict[str, int]:
    """The `| `SomeError` | N |` rows of docs/cli.md's exit-code section."""
    section = DOC.read_text().split("## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| `(\w+)` \| (\d) \|$", section, re.MULTILINE)}


def test_cli_package_every_error_class_is_in_the_documented_table() -> None:
    documented = _documented_codes()
    classes = _error_classes()
    assert len(classes) >= 18, sorted(classes)  # the scan found the errors (not an empty module)
    assert sorted(set(classes) - set(documented)) == [], "error classes missing from docs/cli.md's table"
    assert sorted(set(documented) - set(classes)) == [], "docs/cli.md names error classes that do not exist"


@pytest.mark.parametrize("name", sorted(_documented_codes()))
def test_cli_package_error_maps_to_the_documented_exit_code(name: str) -> None:
    cls = _error_classes()[name]
    exc = cls.__new__(cls)  # the table goes by class (isinstance); no constructor arguments are needed
    assert _exit_code(exc) == _documented_codes()[name]


@pytest.mark.parametrize(("case", "code"), [("unknown collection", 3), ("rate out of range", 2),
                                            ("model folder without a model", 4), ("search log not a database", 2)])
def test_cli_package_error_exit_code_through_a_real_command(tmp_path: Path, case: str, code: int) -> None:
    """The table is what a user sees: a real `facelens` process exits with the family's code and one line."""
    portraits = sorted((ROOT / "examples" / "portraits").glob("*.jpg"))
    args = {
        "unknown collection": ["collection", "describe", "nope", "--home", str(tmp_path)],  # CollectionNotFoundError
        "rate out of range": ["compare", str(portraits[0]), str(portraits[1]), "--max-fmr", "1e-30"],
        "model folder without a model": ["detect", str(portraits[0]), "--model", str(tmp_path)],  # ModelFileError
        "search log not a database": ["log", "export", "--home", str(tmp_path)],  # SearchLogError
    }[case]
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "search-log.sqlite").write_text("not a database")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "facelens", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facelens: error: "), proc.stderr
