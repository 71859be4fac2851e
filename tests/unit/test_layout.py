"""The code's shape, checked: the lean programs stay stdlib-only and start without
site-packages, their specs survive the trip through JSON, the core neither prints nor
exits, doctor does not reach up into the verbs, and every result has one envelope."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from dockerup import programs, results
from dockerup.programs import specs

PKG = Path(programs.__file__).parent.parent
PROGRAMS = sorted(Path(programs.__file__).parent.glob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (function-level too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_lean_programs_import_only_the_stdlib_and_their_own_package(path: Path) -> None:
    bad = {
        m for m in imports(path)
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "__future__"
        and not (m == "dockerup.programs" or m.startswith("dockerup.programs."))
    }  # fmt: skip
    assert bad == set(), f"{path.name} imports {sorted(bad)}"


# The programs that are started (the rest of the package are their libraries).
ENTRIES = [Path(programs.script(n)) for n in ("child", "keeper", "lazy", "portproxy", "runtime")]


@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: p.name)
def test_lean_programs_load_under_python_s_from_any_directory(path: Path) -> None:
    """Debian's interpreter, isolated (-I: no site-packages, no cwd, no PYTHONPATH), from /:
    only the bootstrap in each program can find the package."""
    loader = (
        "import importlib.util, sys; "
        f"s = importlib.util.spec_from_file_location('lean', {str(path)!r}); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)"
    )
    r = subprocess.run(["/usr/bin/python3", "-S", "-I", "-c", loader], cwd="/",
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr


SAMPLES: list[specs.Spec] = [
    specs.Command(["/usr/sbin/dockerd", "--rootless"], {"PATH": "/bin"}),
    specs.LazySpec(5, 6, "/run/s", "/run/lazy.json", "/run/pid", ["/bin/docker-up", "up"]),
    specs.ProxySpec("/run/ports.sock", "/usr/sbin/docker-proxy"),
    specs.RuntimeSpec("/usr/sbin/runc", {"net.ipv4.tcp_wmem": "1 2 3"}, None),
    specs.NetCheck("tap0", "10.0.2.100", 24, "10.0.2.2", 65520),
]


@pytest.mark.parametrize("spec", SAMPLES, ids=lambda s: type(s).__name__)
def test_specs_survive_json(spec: specs.Spec) -> None:
    assert type(spec).from_json(spec.to_json()) == spec


def test_a_spec_refuses_fields_it_does_not_know() -> None:
    """A program older or newer than the CLI that wrote its spec fails at once, by name."""
    doc = dataclasses.asdict(SAMPLES[2]) | {"surprise": 1}
    with pytest.raises(ValueError, match="surprise"):
        specs.ProxySpec.from_dict(doc)


CORE = [p for p in PKG.rglob("*.py")
        if not {"cli", "programs"} & set(p.relative_to(PKG).parts)
        and p.name not in ("__main__.py", "netcheck.py")]  # fmt: skip


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PKG)))
def test_the_core_neither_prints_nor_exits(path: Path) -> None:
    """Only the CLI layer prints and chooses exit codes (netcheck.py and the lean programs
    are processes of their own)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("print", "exit", "SystemExit"), f"{path.name}:{node.lineno}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = ast.unparse(node.func)
            assert name not in ("sys.exit", "typer.Exit"), f"{path.name}:{node.lineno}"
        if isinstance(node, ast.Raise) and node.exc is not None:
            assert "SystemExit" not in ast.unparse(node.exc), f"{path.name}:{node.lineno}"


def test_doctor_does_not_import_the_verbs_or_the_cli() -> None:
    for path in (PKG / "doctor").glob("*.py"):
        reached = {m for m in imports(path) if m.startswith(("dockerup.verbs", "dockerup.cli"))}
        assert reached == set(), f"{path.name} imports {sorted(reached)}"


def test_every_result_has_a_text_form_and_the_envelope() -> None:
    from dockerup.cli.render import TEXT

    base = results.Result
    kinds = [c for c in vars(results).values()
             if isinstance(c, type) and issubclass(c, base) and c is not base]  # fmt: skip
    assert set(kinds) - {results.DryRun} == set(TEXT)
    doc = results.envelope(results.Stopped(was_running=True))
    assert doc == {"version": 1, "kind": "stop", "was_running": True}
    assert len({k.kind for k in kinds}) == len(kinds)


def test_python_m_dockerup_is_the_cli() -> None:
    r = subprocess.run([sys.executable, "-m", "dockerup", "status", "--help"], cwd=PKG.parent,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and "Is docker-up running" in r.stdout, r.stderr
