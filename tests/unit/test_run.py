"""`docker-up run`'s plan: which namespaces, who the program is, what it keeps."""

from __future__ import annotations

import dataclasses

import pytest

from dockerup.errors import DockerUpError
from dockerup.namespace import join as ns
from dockerup.verbs.run import MARKER, Nest, RunPlan, Where, plan_run

from .given import OUTSIDE, RUNNING

ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/u", "FOO": "bar"}


def plan(
    mode: str = "rootless",
    where: Where = OUTSIDE,
    root: bool = False,
    uid: int = 1000,
    net: str = "slirp4netns",
) -> RunPlan:
    state = dataclasses.replace(RUNNING, dockerd_pid=4242, mode=mode, net=net)
    return plan_run(
        state, where, ["id", "-u"], root=root, uid=uid, gid=uid + 1, cwd="/home/u/src", env=ENV
    )


def test_rootless_joins_all_three_and_runs_as_the_user() -> None:
    p = plan()
    assert p.target == 4242 and p.join == ("user", "mnt", "net")
    assert p.nest == Nest(1000, 1001, identity=False)
    assert p.argv == ("id", "-u") and p.cwd == "/home/u/src"
    assert p.env == {**ENV, MARKER: "user"}


def test_root_is_root_in_the_namespace_without_a_nested_one() -> None:
    p = plan(root=True)
    assert p.join == ("user", "mnt", "net") and p.nest is None
    assert p.env[MARKER] == "root"


@pytest.mark.parametrize("mode", ["userns-root", "privileged"])
def test_a_root_user_stays_root_with_every_id_but_no_power_over_the_namespace(mode: str) -> None:
    """docker-up made no user namespace: its namespaces are the caller's user namespace's,
    so the program gets one of its own that maps every id to itself."""
    p = plan(mode, Where(same_net=False, same_user=True), uid=0)
    assert p.join == ("mnt", "net") and p.nest == Nest(0, 1, identity=True)
    assert plan(mode, Where(False, True), uid=0, root=True).nest is None


def test_host_network_joins_only_the_mount_namespace() -> None:
    p = plan("privileged", Where(same_net=True, same_user=True), uid=0, net="host")
    assert p.join == ("mnt",)


def test_inside_run_already_the_program_just_runs() -> None:
    """From a shell that `run` started (shell-init --enter): same network namespace, a user
    namespace of its own. Entering again would fail (no capability to go back)."""
    inside = Where(same_net=True, same_user=False)
    p = plan(where=inside)
    assert p.join == () and p.nest is None and p.env[MARKER] == "user"
    with pytest.raises(DockerUpError, match="cannot become root") as e:
        plan(where=inside, root=True)
    assert e.value.hint


def test_identity_map_copies_every_extent() -> None:
    current = "         0       1000          1\n         1     100000      65536\n"
    assert ns.identity_map(current) == "0 0 1\n1 1 65536\n"
    assert ns.identity_map("0 0 4294967295\n") == "0 0 4294967295\n"


def test_run_parses_its_own_options_and_leaves_the_command_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --root ls -h`: --root is run's, -h is ls's (not docker-up's help)."""
    from typer.testing import CliRunner

    from dockerup.cli import main as cli
    from dockerup.verbs import run as verbs

    seen: list[tuple[list[str], bool, bool]] = []
    monkeypatch.setattr(verbs, "run", lambda p, c, root, fb: seen.append((c, root, fb is None)))
    r = CliRunner().invoke(cli.app, ["run", "--root", "ls", "-h"], prog_name="docker-up")
    assert r.exit_code == 0, r.output
    assert seen == [(["ls", "-h"], True, True)]
    CliRunner().invoke(cli.app, ["run", "--fallback", "--", "bash"], prog_name="docker-up")
    assert seen[-1] == (["bash"], False, False)


@pytest.mark.parametrize(
    "args",
    [
        ["--", "id", "-u"],
        ["id", "-u"],
        ["--root", "--", "ip", "addr"],
        ["--root", "ip", "-h"],
        ["--fallback", "--", "/bin/bash", "-l"],
        ["--fallback", "--root", "sh"],
        ["sh", "--", "x"],
    ],
)
def test_the_quick_path_reads_run_as_typer_does(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """entry.py's quick path (no Typer) and the Typer command agree on every plain form."""
    from typer.testing import CliRunner

    from dockerup.cli import main as cli
    from dockerup.cli import run as cli_run
    from dockerup.verbs import run as verbs

    seen: list[tuple[list[str], bool, bool]] = []
    monkeypatch.setattr(verbs, "run", lambda p, c, root, fb: seen.append((c, root, fb is not None)))
    r = CliRunner().invoke(cli.app, ["run", *args], prog_name="docker-up")
    assert r.exit_code == 0, r.output
    assert cli_run.quick_run(args) == seen[0]


@pytest.mark.parametrize("args", [[], ["--"], ["-h"], ["--debug", "x"], ["--help"], ["-x", "y"]])
def test_the_quick_path_leaves_the_rest_to_typer(args: list[str]) -> None:
    from dockerup.cli import run as cli_run

    assert cli_run.quick_run(args) is None
