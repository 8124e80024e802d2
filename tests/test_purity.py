"""`protocols` stays pure and the packages stay in their layers (see ARCHITECTURE.md, Layout).

Three checks: every import in `protocols/` is on an allowlist of pure modules (a static AST
scan that also flags dynamic imports); no package imports a project package it may not; and
importing all of `protocols` in a fresh interpreter loads no networking, event-loop, database,
serial or Modbus module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("protocols", "hw_sim", "edge_agent", "cloud")

PURE_MODULES = frozenset(
    {
        # stdlib modules with no I/O, clocks, threads or global side effects
        "__future__",
        "abc",
        "base64",
        "binascii",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "functools",
        "hashlib",
        "itertools",
        "json",
        "math",
        "operator",
        "re",
        "struct",
        "types",
        "typing",
        "uuid",
        # third-party libraries ARCHITECTURE.md allows in protocols
        "cbor2",
        "cryptography",
        "protocols",
    }
)
"""Allowed in `protocols`, with their submodules (``collections.abc``, ``cryptography.*``)."""

DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


@dataclass(frozen=True)
class Import:
    """One import found in a source file."""

    module: str
    line: int
    dynamic: bool = False

    def describe(self, path: str) -> str:
        kind = "dynamic import of" if self.dynamic else "imports"
        return f"{path}:{self.line} {kind} {self.module!r}"


def imports_in(source: str, package: str) -> Iterator[Import]:
    """Every module `source` imports; `package` resolves relative imports.

    Calls to ``__import__`` or ``import_module`` are reported as dynamic imports, named by
    their argument when it is a literal (``"<computed>"`` otherwise).
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                if node.module:
                    yield Import(".".join([*base, node.module]), node.lineno)
                else:  # from . import x: each name is a submodule (or an attribute of one)
                    for alias in node.names:
                        yield Import(".".join([*base, alias.name]), node.lineno)
            else:
                assert node.module is not None
                yield Import(node.module, node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in DYNAMIC_IMPORTERS:
                arg = node.args[0] if node.args else None
                module = "<computed>"
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    module = arg.value
                yield Import(module, node.lineno, dynamic=True)


def is_pure(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in PURE_MODULES for i in range(1, len(parts) + 1))


def purity_offences(source: str, path: str, package: str = "protocols") -> list[str]:
    """What in `source` breaks the purity rule, one line per offence naming file and module."""
    return [
        found.describe(path) + ("" if found.dynamic else " (not on the pure allowlist)")
        for found in imports_in(source, package)
        if found.dynamic or not is_pure(found.module)
    ]


def modules_of(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path, root: Path = ROOT) -> str:
    """The dotted package a module's relative imports are resolved against."""
    name = module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


# -- (a) protocols imports only pure modules ---------------------------------------------------


def test_protocols_imports_only_pure_modules() -> None:
    files = modules_of("protocols")
    assert ROOT / "protocols" / "codecs.py" in files
    offences = [
        offence
        for path in files
        for offence in purity_offences(
            path.read_text(), str(path.relative_to(ROOT)), package_of(path)
        )
    ]
    assert not offences, "protocols/ must stay I/O-free:\n" + "\n".join(offences)


SCANNER_CASES = [
    ("import socket", "imports 'socket'"),
    ("import os.path", "imports 'os.path'"),
    ("from os import path", "imports 'os'"),
    ("from asyncio import sleep", "imports 'asyncio'"),
    ("import logging, struct", "imports 'logging'"),
    ("if True:\n    import sqlite3", "imports 'sqlite3'"),
    ("def f():\n    from pymodbus.client import ModbusTcpClient", "imports 'pymodbus.client'"),
    ("import importlib\nimportlib.import_module('socket')", "dynamic import of 'socket'"),
    ("from importlib import import_module\nimport_module(name)", "dynamic import of '<computed>'"),
    ("__import__('socket')", "dynamic import of 'socket'"),
    ("import builtins\nbuiltins.__import__('os')", "dynamic import of 'os'"),
]


@pytest.mark.parametrize(("source", "message"), SCANNER_CASES)
def test_scanner_catches_impure_imports(source: str, message: str) -> None:
    offences = purity_offences(source, "protocols/bad.py")
    assert offences, f"scanner missed: {source!r}"
    assert any(o.startswith("protocols/bad.py:") and message in o for o in offences), offences


def test_scanner_allows_pure_imports() -> None:
    source = """
from __future__ import annotations
import struct, math
import collections.abc
from collections.abc import Mapping
from dataclasses import dataclass
import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from protocols.errors import EncodeError
from . import registers
from .codecs import encode
"""
    assert purity_offences(source, "protocols/good.py") == []
    resolved = {i.module for i in imports_in(source, "protocols")}
    assert {"protocols.registers", "protocols.codecs"} <= resolved


def test_scanner_reports_file_and_line() -> None:
    (offence,) = purity_offences("import struct\n\nimport socket\n", "protocols/wire.py")
    assert offence.startswith("protocols/wire.py:3 imports 'socket'")


# -- (b) layering ------------------------------------------------------------------------------

MAY_IMPORT = {
    "protocols": {"protocols"},
    "hw_sim": {"hw_sim", "protocols"},
    "edge_agent": {"edge_agent", "protocols"},
    "cloud": {"cloud", "protocols"},
}
"""Project packages each package may import, from ARCHITECTURE.md's layout table: the edge
agent and the cloud agree only through `protocols`, and nothing ships the simulator."""


def layering_offences(package: str, root: Path = ROOT) -> list[str]:
    offences = []
    for path in modules_of(package, root):
        for found in imports_in(path.read_text(), package_of(path, root)):
            top = found.module.split(".")[0]
            if top in PROJECT_PACKAGES and top not in MAY_IMPORT[package]:
                offences.append(found.describe(str(path.relative_to(root))))
    return offences


@pytest.mark.parametrize("package", PROJECT_PACKAGES)
def test_layering(package: str) -> None:
    offences = layering_offences(package)
    allowed = sorted(MAY_IMPORT[package])
    assert not offences, f"{package} may import only {allowed} of the project:\n" + "\n".join(
        offences
    )


def test_scans_resolve_relative_imports() -> None:
    (found,) = imports_in("from ..outbox import Outbox", "edge_agent.uplink")
    assert found.module == "edge_agent.outbox"
    (found,) = imports_in("from . import outbox", "edge_agent")
    assert found.module == "edge_agent.outbox"
    assert package_of(ROOT / "protocols" / "codecs.py") == "protocols"
    assert package_of(ROOT / "protocols" / "__init__.py") == "protocols"


def test_layering_scan_catches_cross_imports(tmp_path: Path) -> None:
    files = {
        "edge_agent/__init__.py": "",
        "edge_agent/uplink.py": "from protocols import wire\nimport cloud.ingest\n",
        "edge_agent/sim.py": "from hw_sim.boiler import Boiler\n",
        "cloud/api.py": "from edge_agent import uplink\n",
        "hw_sim/boiler.py": "import importlib\nimportlib.import_module('cloud.twin')\n",
        "protocols/topics.py": "from . import codecs\nfrom hw_sim import physics\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    offences = {p: layering_offences(p, tmp_path) for p in PROJECT_PACKAGES}
    assert offences == {
        "edge_agent": [
            "edge_agent/sim.py:1 imports 'hw_sim.boiler'",
            "edge_agent/uplink.py:2 imports 'cloud.ingest'",
        ],
        "cloud": ["cloud/api.py:1 imports 'edge_agent'"],
        "hw_sim": ["hw_sim/boiler.py:2 dynamic import of 'cloud.twin'"],
        "protocols": ["protocols/topics.py:2 imports 'hw_sim'"],
    }


# -- (c) importing protocols loads no I/O machinery --------------------------------------------

FORBIDDEN_AT_IMPORT = ("socket", "asyncio", "sqlite3", "serial", "pymodbus", "aiomqtt", "paho")


def protocols_modules() -> list[str]:
    """Every module of `protocols` present now (others are adding messages, wire, cose...)."""
    return [module_name(path) for path in modules_of("protocols")]


def test_importing_protocols_loads_no_io_modules() -> None:
    modules = protocols_modules()
    for required in ("registers", "codecs", "planner", "reference"):
        assert f"protocols.{required}" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    leaked = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN_AT_IMPORT)
    assert not leaked, f"importing {modules} loaded {leaked}"
