"""The code's shape, checked: the lean programs stay stdlib-only and start without
site-packages, their specs survive the trip through JSON, the core neither prints nor
exits, doctor does not reach up into the verbs, and every result has one envelope."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from dockerup import lean, results
from dockerup.net.kinds import KINDS
from dockerup.wire import specs

PKG = Path(lean.__file__).parent


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (function-level too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


# The programs that are started (python -S PATH); what they import is their library.
ENTRIES = [Path(lean.script(n)) for n in sorted(lean.PROGRAMS)]


@pytest.mark.parametrize("path", ENTRIES, ids=lambda p: str(p.relative_to(PKG)))
def test_lean_programs_load_under_python_s_from_any_directory(path: Path) -> None:
    """Debian's interpreter, isolated (-I: no site-packages, no cwd, no PYTHONPATH), from /:
    only the bootstrap in each program can find the package."""
    loader = (
        "import importlib.util, sys; "
        f"s = importlib.util.spec_from_file_location('lean', {str(path)!r}); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)"
    )
    r = subprocess.run(
        ["/usr/bin/python3", "-S", "-I", "-c", loader],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
    )
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


def module_graph(root: Path) -> dict[str, set[str]]:
    """Which package modules each module imports, at any depth of its code: a function's
    lazy import runs too, so it counts. What only a type checker reads (`if
    TYPE_CHECKING:`) never runs, so it does not."""
    names = module_files(root)
    graph: dict[str, set[str]] = {}
    for name, p in names.items():
        package = name if p.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in runtime_nodes(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                for a in node.names:  # `from pkg import mod` imports the module pkg.mod
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in names else base
                    if target in names:
                        edges.add(target)
        graph[name] = edges - {name}
    return graph


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for other in node.orelse:
                yield other
                yield from runtime_nodes(other)
            continue
        yield node
        yield from runtime_nodes(node)


def lean_closure() -> set[Path]:
    """Every file the lean programs load, to the whole of their import closure: each
    module they import at any depth of their code, and the package __init__ above it."""
    graph = module_graph(PKG)
    files = module_files(PKG)
    by_path = {p: m for m, p in files.items()}
    todo = [by_path[e] for e in ENTRIES]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # its packages
        todo += graph[m]
    return {files[m] for m in seen}


def module_files(root: Path) -> dict[str, Path]:
    names = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return names


def core_files(root: Path, processes: set[Path]) -> list[Path]:
    """Below the CLI: everything but cli/ and the given processes of their own (the lean
    programs with what they load, each of which ends itself)."""
    return sorted(
        p
        for p in root.rglob("*.py")
        if p.relative_to(root).parts[0] != "cli" and p.name != "__main__.py" and p not in processes
    )


def core() -> list[Path]:
    return core_files(PKG, lean_closure())


# Any way out of the process: exit, abort, or becoming another program (exec*).
ENDS = re.compile(
    r"print|exit|quit|SystemExit|(sys\.|os\.)?(_exit|exit|abort|exec[lv]p?e?)"
    r"|typer\.Exit"
)

# Where the core is a process of its own (a fork) or turns into one (an exec), so ending the
# process or replacing it is the point; (file, function, call): why.
ENDS_ALLOWED = {
    (
        "keeper/background.py",
        "daemonize",
        "os._exit",
    ): "the middle process of the double fork: it must end without running the CLI's exit "
    "code (atexit, buffered output) a second time",
    (
        "keeper/background.py",
        "report_and_run",
        "os._exit",
    ): "the forked background docker-up: its status goes to the pipe, never to the CLI",
    (
        "keeper/background.py",
        "hold_socket",
        "os.execv",
    ): "the forked child becomes the lazy holder (keeper/lazy.py)",
    (
        "keeper/handover.py",
        "exec_keeper",
        "os.execv",
    ): "a started docker-up becomes the keeper (keeper/resident.py), which keeps its PID",
    (
        "verbs/run.py",
        "exec_program",
        "os.execvpe",
    ): "`run` is the user's program: status, signals and terminal pass straight through",
    (
        "proc.py",
        "forked",
        "os._exit",
    ): "a forked helper (ns.py's id mapper) ends without running the CLI's exit code",
    (
        "verbs/running.py",
        "enter",
        "os.execvpe",
    ): "`exec` and `shell` are the command they run: status, signals and terminal pass "
    "straight through",
}


def ends_and_prints(tree: ast.AST) -> set[tuple[str, str]]:
    """(enclosing function, what) for every print, exit and exec in the code."""
    found: set[tuple[str, str]] = set()

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else func
            if isinstance(child, ast.Call) and ENDS.fullmatch(ast.unparse(child.func)):
                found.add((name, ast.unparse(child.func)))
            bare = child.exc if isinstance(child, ast.Raise) else None  # `raise SystemExit`
            if isinstance(bare, ast.Name | ast.Attribute) and "SystemExit" in ast.unparse(bare):
                found.add((name, "raise SystemExit"))
            visit(child, name)

    visit(tree, "<module>")
    return found


def test_ends_and_prints_sees_every_way_out() -> None:
    code = (
        "import os, sys\nprint(1)\ndef f():\n    os._exit(0)\ndef g():\n"
        "    os.execv('/bin/true', ['true'])\n    os.execvp('x', [])\n    sys.exit(1)\n"
        "    raise SystemExit(2)\ndef h():\n    raise SystemExit\n"
    )
    assert ends_and_prints(ast.parse(code)) == {
        ("<module>", "print"),
        ("f", "os._exit"),
        ("g", "os.execv"),
        ("g", "os.execvp"),
        ("g", "sys.exit"),
        ("g", "SystemExit"),
        ("h", "raise SystemExit"),
    }


@pytest.mark.parametrize("path", core(), ids=lambda p: str(p.relative_to(PKG)))
def test_the_core_neither_prints_nor_exits(path: Path) -> None:
    """Only the CLI layer prints and chooses exit codes (netcheck.py and the lean programs
    are processes of their own); the core ends or replaces its process only where
    ENDS_ALLOWED says why."""
    where = str(path.relative_to(PKG))
    found = {(where, f, what) for f, what in ends_and_prints(ast.parse(path.read_text()))}
    allowed = {k for k in ENDS_ALLOWED if k[0] == where}
    assert found - allowed == set()
    assert allowed - found == set(), "stale entries in ENDS_ALLOWED"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                found.append(sorted([v, *group]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("path", sorted(lean_closure()), ids=lambda p: str(p.relative_to(PKG)))
def test_lean_programs_load_only_the_stdlib_and_their_own_package(path: Path) -> None:
    """What runs under python -S finds no site-packages: every module in the lean
    programs' import closure imports only the standard library and this package."""
    bad = {
        m
        for m in imports(path)
        if m.split(".")[0] not in sys.stdlib_module_names
        and m.split(".")[0] not in ("__future__", "dockerup")
    }
    assert bad == set(), f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_the_lean_closure_is_what_the_programs_load() -> None:
    """The closure is meaningful: it holds the programs, their libraries and the
    packages above them, and none of the CLI's modules (a lean program that reached
    them would load typer, rich and the rest through them)."""
    rel = {str(p.relative_to(PKG)) for p in lean_closure()}
    assert {"keeper/resident.py", "keeper/__init__.py", "__init__.py", "wire/specs.py"} <= rel
    assert {"accel/agent.py", "ports/manager.py", "autoports/scanner.py"} <= rel
    assert not {r for r in rel if r.startswith(("cli/", "verbs/", "doctor/"))}


def test_no_import_cycle() -> None:
    assert cycles(module_graph(PKG)) == []


def test_an_import_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    """The check can fail: a function-level import back into the importer (the shape
    cli/entry.py and cli/main.py once had) is a cycle; one only for the type checker and
    a relative one are told apart correctly."""
    pkg = tmp_path / "pkg"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "entry.py").write_text("def main():\n    from pkg.cli.main import run\n")
    (pkg / "cli" / "main.py").write_text("from pkg.cli import entry\n")
    (pkg / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import other\n"
    )
    (pkg / "other.py").write_text("from . import typed\n")
    graph = module_graph(pkg)
    assert graph["pkg.other"] == {"pkg.typed"} and graph["pkg.typed"] == set()
    assert cycles(graph) == [["pkg.cli.entry", "pkg.cli.main"]]


def test_every_result_has_a_text_form_and_the_envelope() -> None:
    from dockerup.cli.render import TEXT

    base = results.Result
    kinds = [
        c
        for c in vars(results).values()
        if isinstance(c, type) and issubclass(c, base) and c is not base
    ]
    assert set(kinds) - {results.DryRun} == set(TEXT)
    doc = results.envelope(results.Stopped(was_running=True))
    assert doc == {"version": 1, "kind": "stop", "was_running": True}
    assert len({k.kind for k in kinds}) == len(kinds)


def test_python_m_dockerup_is_the_cli() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "dockerup", "status", "--help"],
        cwd=PKG.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "Is docker-up running" in r.stdout, r.stderr


MAX_LINES = 500
# Over the limit while their owners split them (issue 28); nothing new joins this list.
LONG_ALLOWED: set[str] = set()


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_is_over_500_lines(path: Path) -> None:
    """Split along responsibilities, not cut in half: a module over the limit has grown a
    second job."""
    if str(path.relative_to(PKG)) in LONG_ALLOWED:
        pytest.skip("being split by its owner")
    assert len(path.read_text().splitlines()) <= MAX_LINES


# Every place a process starts another program (or becomes one), and what it starts: one
# launcher for each program, so a restart starts it exactly as the first start did.
LAUNCHERS = {
    ("namespace/dockerd.py", "exec_dockerd"): "dockerd (first start in child.py, restarts)",
    ("namespace/dockerd.py", "start_containerd"): "containerd, beside each dockerd",
    ("namespace/netstart.py", "start_net"): "the network helper (supervise.py, keeper.py)",
    ("accel/ociruntime.py", "main"): "runc, under docker-up's runtime wrapper",
    ("views/serve.py", "_confined"): "bindfs, for a dev container's view (the runtime wrapper)",
    ("keeper/lazy.py", "main"): "docker-up up, on socket activation's first client",
    ("ports/proxy.py", "start_real_proxy"): "docker-proxy, for one published port",
    ("autoports/scanner.py", "_ensure_helper"): "auto ports' inside helper",
    ("namespace/child.py", "try_iptables"): "iptables -S, the backend probe in the namespace",
    ("namespace/child.py", "run_all"): "ip, for the IPv6 address and route in the namespace",
    ("verbs/running.py", "enter"): "nsenter, which `docker-up exec` becomes",
    ("verbs/run.py", "exec_program"): "the user's program, which `docker-up run` becomes",
    ("keeper/handover.py", "exec_keeper"): "the keeper, which the CLI becomes",
    ("namespace/early.py", "start_child"): "the namespace child",
    ("keeper/background.py", "hold_socket"): "the lazy holder",
    ("proc.py", "*"): "every short-lived command (id maps, probes, fixes)",
}
STARTS = re.compile(r"^(subprocess\.(Popen|run|check_output)|os\.exec\w+)$")


def launch_sites() -> set[tuple[str, str]]:
    found = set()
    for path in PKG.rglob("*.py"):
        rel = str(path.relative_to(PKG))
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and STARTS.match(ast.unparse(node.func)):
                    found.add((rel, "*" if rel == "proc.py" else fn.name))
    return found


def test_each_program_has_one_launcher() -> None:
    assert launch_sites() == set(LAUNCHERS)


# docs/architecture.md's "never" rules, each as data: (package, what it never imports, how far
# the check looks, why). "closure": the package's whole import closure (any depth of the
# code, function-level imports too), so a detour through a third module is caught as well;
# "direct": what the package's own modules import (the drivers probe their helpers with
# dockerup.proc, and the kinds registry loads a driver when its kind is used, so plan and
# settings reach those only through net/, by design).
class Never(NamedTuple):
    package: str
    forbidden: frozenset[str]
    reach: str
    why: str


def starters() -> frozenset[str]:
    """The modules that start a process (each launcher's file, LAUNCHERS below), by name."""
    return frozenset(f.removesuffix(".py").replace("/", ".") for f, _ in LAUNCHERS)


def never_rules() -> list[Never]:
    return [
        Never("plan", frozenset({"keeper", "namespace"}), "closure", "planning has no effects"),
        Never("plan", starters(), "direct", "planning starts no process"),
        Never(
            "doctor",
            frozenset({"keeper", "verbs", "cli"}),
            "closure",
            "diagnosis changes nothing and sits below the use cases",
        ),
        Never("net", frozenset({"cli", "verbs"}), "closure", "drivers know no screen and no verb"),
        Never("host", frozenset({"plan"}), "closure", "facts are read, not decided"),
        Never(
            "settings",
            frozenset(f"net.{k}" for k in KINDS),
            "direct",
            "settings name a driver, they do not load it",
        ),
    ]


def broken_rules(root: Path, rule: Never) -> set[tuple[str, str]]:
    """(module of the package, forbidden module it reaches) for each breach of the rule."""
    graph = module_graph(root)
    top = root.name

    def reach(m: str) -> set[str]:
        if rule.reach == "direct":
            return graph[m]
        seen: set[str] = set()
        todo = list(graph[m])
        while todo:
            if (x := todo.pop()) not in seen:
                seen.add(x)
                todo += graph[x]
        return seen

    found = set()
    for m in graph:
        if m == f"{top}.{rule.package}" or m.startswith(f"{top}.{rule.package}."):
            for x in reach(m):
                rel = x.removeprefix(f"{top}.")
                if any(rel == f or rel.startswith(f"{f}.") for f in rule.forbidden):
                    found.add((m, x))
    return found


@pytest.mark.parametrize("rule", never_rules(), ids=lambda r: f"{r.package}-{r.reach}")
def test_never_rules_hold(rule: Never) -> None:
    assert broken_rules(PKG, rule) == set(), rule.why


@pytest.mark.parametrize("rule", never_rules(), ids=lambda r: f"{r.package}-{r.reach}")
def test_a_broken_never_rule_is_found(tmp_path: Path, rule: Never) -> None:
    """Each rule can fail: a tree that breaks it on purpose (directly, and for a closure
    rule through a lazy import in a third module) is reported, a tree that keeps it is not."""
    pkg = tmp_path / "pkg"
    target = sorted(rule.forbidden)[0].split(".")
    for d in {rule.package, target[0], "middle"}:
        (pkg / d).mkdir(parents=True, exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / Path(*target).with_suffix(".py")).write_text("")
    forbidden = "pkg." + ".".join(target)
    (pkg / rule.package / "good.py").write_text("import os\n")
    assert broken_rules(pkg, rule) == set()
    (pkg / rule.package / "bad.py").write_text(f"def f():\n    import {forbidden}\n")
    assert broken_rules(pkg, rule) == {(f"pkg.{rule.package}.bad", forbidden)}
    if rule.reach == "closure":
        (pkg / rule.package / "bad.py").write_text("from pkg.middle import detour\n")
        (pkg / "middle" / "detour.py").write_text(f"def f():\n    import {forbidden}\n")
        assert (f"pkg.{rule.package}.bad", forbidden) in broken_rules(pkg, rule)


# What a screen is: its libraries. Nothing under net/ (drivers) loads them or prints.
SCREEN = ("rich", "typer", "click")


def screen_uses(root: Path, package: str) -> set[tuple[str, str]]:
    found = set()
    for path in sorted((root / package).rglob("*.py")):
        where = str(path.relative_to(root))
        found |= {(where, m) for m in imports(path) if m.split(".")[0] in SCREEN}
        found |= {(where, what) for _, what in ends_and_prints(ast.parse(path.read_text()))}
    return found


def test_drivers_know_no_screen() -> None:
    assert screen_uses(PKG, "net") == set()


def test_a_driver_that_knows_a_screen_is_found(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "quiet.py").write_text("import os\n")
    assert screen_uses(tmp_path, "net") == set()
    (tmp_path / "net" / "loud.py").write_text("def f():\n    import rich\n    print(1)\n")
    assert screen_uses(tmp_path, "net") == {("net/loud.py", "rich"), ("net/loud.py", "print")}


def test_the_core_check_finds_a_print_below_the_cli(tmp_path: Path) -> None:
    """Nothing below cli prints or exits, and the check can fail: in a tree broken on
    purpose, a print in plan/ and an exit in keeper/ are found, the cli's own are not."""
    for d in ("cli", "plan", "keeper"):
        (tmp_path / d).mkdir()
    (tmp_path / "cli" / "main.py").write_text("import sys\nprint(1)\nsys.exit(0)\n")
    (tmp_path / "plan" / "build.py").write_text("def build():\n    print('plan')\n")
    (tmp_path / "keeper" / "stop.py").write_text("import sys\ndef stop():\n    sys.exit(1)\n")
    found = {
        (str(p.relative_to(tmp_path)), f, what)
        for p in core_files(tmp_path, set())
        for f, what in ends_and_prints(ast.parse(p.read_text()))
    }
    assert found == {("plan/build.py", "build", "print"), ("keeper/stop.py", "stop", "sys.exit")}


# The shape of the house (issue 35): packages small enough to read, modules named for what
# they do, each name once (verbs/ names its commands, which share names with the packages
# that do the work: verbs/doctor.py and doctor/).
MAX_MODULES = 12
VAGUE = {"common", "utils", "helpers", "misc"}


def shape_problems(root: Path) -> list[str]:
    problems = []
    packages = sorted({p.parent for p in root.rglob("__init__.py")} | {root})
    for pkg in packages:
        if (n := len(list(pkg.glob("*.py")))) > MAX_MODULES:
            problems.append(f"{pkg.relative_to(root.parent)}/ holds {n} modules")
    package_names = {p.name for p in packages if p != root}
    seen: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if p.stem in VAGUE:
            problems.append(f"{rel} says nothing of what it holds")
        if p.name in ("__init__.py", "__main__.py") or rel.parts[0] == "verbs":
            continue
        if p.stem in package_names:
            problems.append(f"{rel} is named like the package {p.stem}/")
        if p.name in seen:
            problems.append(f"{rel} and {seen[p.name]} share a name")
        seen.setdefault(p.name, rel)
    return problems


def test_the_packages_are_small_and_each_name_says_one_thing() -> None:
    assert shape_problems(PKG) == []


def test_a_misshapen_tree_is_found(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    for d in ("", "host", "doctor", "big", "verbs"):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "__init__.py").write_text("")
    (root / "host" / "facts.py").write_text("")
    (root / "verbs" / "doctor.py").write_text("")
    assert shape_problems(root) == []
    (root / "net").mkdir()
    (root / "net" / "__init__.py").write_text("")
    (root / "net" / "facts.py").write_text("")
    (root / "utils.py").write_text("")
    (root / "doctor" / "host.py").write_text("")
    for i in range(MAX_MODULES):
        (root / "big" / f"m{i}.py").write_text("")
    assert shape_problems(root) == [
        "pkg/big/ holds 13 modules",
        "doctor/host.py is named like the package host/",
        "net/facts.py and host/facts.py share a name",
        "utils.py says nothing of what it holds",
    ]


@pytest.mark.parametrize("init", sorted(PKG.glob("*/__init__.py")), ids=lambda p: p.parent.name)
def test_each_package_says_what_it_owns_and_must_not_touch(init: Path) -> None:
    """A newcomer reads a package's docstring to learn what it holds and where it stops."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert "Must not touch" in doc and len(doc.split()) > 20, doc


def test_one_way_to_wait_on_the_cli_side() -> None:
    """waiting.py owns polling (tenacity); a second wrapper elsewhere would drift from it."""
    users = {
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if re.search(r"^\s*(from|import) tenacity", p.read_text(), re.M)
    }
    assert users == {"waiting.py"}


def driver_name_branches(tree: ast.AST, names: set[str]) -> list[str]:
    """Every comparison (==, !=, in, not in, a match case) with a driver's name as a
    string literal: a caller asking "is it pasta?" instead of asking the driver's kind."""

    def literal(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        elems = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else []
        return any(literal(e) for e in elems)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(map(literal, [node.left, *node.comparators])):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.MatchValue) and literal(node.value):
            found.append(f"case {ast.unparse(node.value)}")
    return found


def test_no_caller_branches_on_a_network_drivers_name() -> None:
    """What differs between drivers is their kind's to say (net/kinds.py), so that a driver
    has one owner; outside dockerup/net nothing compares a name with "pasta" or
    "slirp4netns" (doctor's "is this the chosen driver?" compares with the driver's NAME)."""
    from dockerup.net.kinds import KINDS

    found = {
        str(p.relative_to(PKG)): hits
        for p in PKG.rglob("*.py")
        if p.relative_to(PKG).parts[0] != "net"
        and (hits := driver_name_branches(ast.parse(p.read_text()), set(KINDS)))
    }
    assert found == {}


def test_a_branch_on_a_driver_name_is_found() -> None:
    code = (
        'if config.net == "pasta": pass\nok = net != other\nx = n in ("a", "slirp4netns")\n'
        'match net:\n    case "pasta": pass\nnames = ["pasta"]\n'
    )
    assert driver_name_branches(ast.parse(code), {"pasta", "slirp4netns"}) == [
        "config.net == 'pasta'",
        "n in ('a', 'slirp4netns')",
        "case 'pasta'",
    ]


# Linux's ABI has one owner, linux/libc.py: the libc handle, the flag and ioctl numbers.
# A second copy is how a number drifts (a bare prctl(1, ...) once hid among them).
ABI_NAME = re.compile(r"(CLONE_NEW|PR_(SET|GET)_|SIOC|IFF_|MS_)\w+", re.IGNORECASE)
# The calls that take such a number, and where: prctl's option, setns' kind, ioctl's request.
NUMBER_AT = {"prctl": 0, "unshare": 0, "setns": 1, "ioctl": 1}


def abi_copies(tree: ast.AST) -> set[str]:
    """What a module holds of Linux's ABI itself: a library handle it opens, a constant it
    names, or a bare number it hands a libc call or an ioctl."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func.rpartition(".")[2] in ("CDLL", "PyDLL", "LoadLibrary"):
                found.add(func)
            at = NUMBER_AT.get(func.rpartition(".")[2])
            arg = node.args[at] if at is not None and len(node.args) > at else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, int) and arg.value:
                found.add(f"{func} with a bare number")
        elif (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Store)
            and (ABI_NAME.fullmatch(node.id))
        ):
            found.add(node.id)
    return found


def test_abi_copies_finds_each_kind_of_copy() -> None:
    code = (
        "import ctypes, fcntl\nlibc = ctypes.CDLL(None)\nPR_SET_PDEATHSIG = 1\n"
        "def f(s, fd):\n    siocgifflags = 0x8913\n    fcntl.ioctl(s, 0x8914, b'')\n"
        "    libc.prctl(1, 15)\n    libc.setns(fd, 0x40000000)\n"
        "    CLONE_NEWNET, x = 0x40000000, 1\n"
        "from dockerup.linux import libc as linux\n"
        "linux.prctl(linux.PR_SET_KEEPCAPS, 1)\nlinux.libc.setns(fd, 0)\n"
    )
    assert abi_copies(ast.parse(code)) == {
        "ctypes.CDLL",
        "PR_SET_PDEATHSIG",
        "siocgifflags",
        "fcntl.ioctl with a bare number",
        "libc.prctl with a bare number",
        "libc.setns with a bare number",
        "CLONE_NEWNET",
    }


TESTS = Path(__file__).parent.parent
# The owner, and its tests, which spell out a few numbers of their own to check it.
ABI_USERS = [
    p
    for p in sorted([*PKG.rglob("*.py"), *TESTS.rglob("*.py")])
    if p not in (PKG / "linux" / "libc.py", Path(__file__).with_name("test_linux.py"))
]


@pytest.mark.parametrize(
    "path",
    ABI_USERS,
    ids=lambda p: str(p.relative_to(PKG.parent if PKG in p.parents else TESTS.parent)),
)
def test_linux_abi_has_one_owner(path: Path) -> None:
    assert abi_copies(ast.parse(path.read_text())) == set(), "take it from linux/libc.py"


def parent_death_copies(tree: ast.AST) -> set[str]:
    """The parent-death signal set, or the parent compared, other than through
    linux.die_with_parent (issue 33): a copy that sets PR_SET_PDEATHSIG without checking the
    parent afterwards leaves the child to init when the parent ended first."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("PR_SET_PDEATHSIG", "getppid"):
            found.add(node.attr)
    return found


def test_parent_death_copies_finds_each_kind() -> None:
    code = "linux.prctl(linux.PR_SET_PDEATHSIG, 9)\nif os.getppid() != p:\n    os._exit(1)\n"
    assert parent_death_copies(ast.parse(code)) == {"PR_SET_PDEATHSIG", "getppid"}


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PKG.rglob("*.py")) if p != PKG / "linux" / "libc.py"],
    ids=lambda p: str(p.relative_to(PKG.parent)),
)
def test_a_child_dies_with_its_parent_through_one_helper(path: Path) -> None:
    assert parent_death_copies(ast.parse(path.read_text())) == set(), (
        "use linux.die_with_parent(sig, parent), with the parent's PID read before the fork"
    )


# -- The tests' own layout ---------------------------------------------------------------------

TESTS = Path(__file__).resolve().parents[1]


def imports_of_test_modules(root: Path) -> list[str]:
    """Each import, by any module under `root` (the tests package), of a test module
    (test_*.py) or of a conftest (pytest loads those itself): `from .test_x import`,
    `from . import test_x`, `from tests.unit.test_x import`, `import tests.unit.test_x`,
    `from ..unit.test_x import`, at any depth (a function's lazy import too). What tests
    share lives in modules of their own (given.py, harness.py) or in conftest fixtures: a
    test module's edit then never breaks another module's tests."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        package = rel.parent.parts  # the importer's package: ("tests", "unit")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module.split(".") if node.module else []
                if node.level:
                    base = [*package[: len(package) - node.level + 1], *base]
                targets = [".".join(base)]
                # `from PACKAGE import name` may import the module PACKAGE.name.
                if root.parent.joinpath(*base).is_dir():
                    targets += [".".join([*base, a.name]) for a in node.names]
            else:
                continue
            for target in targets:
                last = target.rpartition(".")[2]
                if last.startswith("test_") or last == "conftest":
                    found.append(f"{rel}:{node.lineno} imports {target}")
    return found


def test_no_test_module_imports_another() -> None:
    assert imports_of_test_modules(TESTS) == []


def test_an_import_of_a_test_module_is_found_in_each_form(tmp_path: Path) -> None:
    """The check can fail: a broken tests tree with each form of the import (relative,
    absolute, from the package, lazy in a function, across packages, of a conftest); the
    shared module's imports, one of a function named test_..., are not counted."""
    tests = tmp_path / "tests"
    files = {
        "__init__.py": "",
        "unit/__init__.py": "",
        "unit/given.py": "def facts(): ...\ndef test_value(): ...\n",
        "unit/test_a.py": "from .test_b import helper\nfrom .given import facts, test_value\n",
        "unit/test_b.py": "def helper():\n    from tests.unit import given, test_a\n",
        "unit/test_c.py": "import tests.unit.test_a\nfrom tests.unit.test_b import helper\n",
        "integration/__init__.py": "",
        "integration/conftest.py": "from .harness import up\n",
        "integration/harness.py": "from tests.unit.given import facts\n",
        "integration/test_d.py": "from ..unit.test_a import facts\nfrom . import conftest\n",
    }
    for name, text in files.items():
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text(text)
    assert imports_of_test_modules(tests) == [
        "tests/integration/test_d.py:1 imports tests.unit.test_a",
        "tests/integration/test_d.py:2 imports tests.integration.conftest",
        "tests/unit/test_a.py:1 imports tests.unit.test_b",
        "tests/unit/test_b.py:2 imports tests.unit.test_a",
        "tests/unit/test_c.py:1 imports tests.unit.test_a",
        "tests/unit/test_c.py:2 imports tests.unit.test_b",
    ]
