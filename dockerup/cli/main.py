"""The command line. Typer only: parse, call the core, render. Heavy modules are imported
inside the commands, so `docker-up` starts its helpers before paying for them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.main

from dockerup.cli.argv import means_up
from dockerup.cli.choices import ForwarderName, ModeName, NetName, Shell, StorageName
from dockerup.cli.guard import guarded
from dockerup.cli.render import announce, emit, progress
from dockerup.errors import DockerUpError

if TYPE_CHECKING:
    from dockerup.results import Result

app = typer.Typer(
    # --install-completion/--show-completion; `autostart enable` installs it too.
    add_completion=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    # Inherited by every subcommand (click passes help_option_names down).
    context_settings={"help_option_names": ["-h", "--help"]},
    help="A rootless Docker daemon in its own user and network namespace. "
    "`docker-up` alone starts it in the foreground (as `docker-up up`).",
)
state = {"debug": False}


def _print_version(asked: bool) -> None:
    if asked:
        from dockerup import __version__

        print(f"docker-up {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks (before or after the command).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    state["debug"] = state["debug"] or debug


@app.command()
def up(
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; return when ready.")
    ] = False,
    mtu: Annotated[
        int | None, typer.Option(help="MTU of the tap device and docker0 (1280..65520).")
    ] = None,
    allow_host_loopback: Annotated[
        bool | None,
        typer.Option(
            "--allow-host-loopback/--no-allow-host-loopback",
            help="Let the namespace reach the workspace's 127.0.0.1 as 10.0.2.2.",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[ModeName | None, typer.Option(help="Run mode (default: auto).")] = None,
    net: Annotated[
        NetName | None, typer.Option(help="Network driver (default: slirp4netns).")
    ] = None,
    net_accel: Annotated[
        bool | None,
        typer.Option(
            "--net-accel/--no-net-accel",
            help="Containers' TCP/IPv4 connections bypass the network helper (default: on "
            "where supported; label docker-up.net-accel=off opts a container out).",
            show_default=False,
        ),
    ] = None,
    daemon_net_accel: Annotated[
        bool | None,
        typer.Option(
            "--daemon-net-accel/--no-daemon-net-accel",
            help="dockerd's own TCP (pulls, pushes) bypasses the network helper.",
            show_default=False,
        ),
    ] = None,
    ipv6: Annotated[
        bool | None,
        typer.Option(
            "--ipv6/--no-ipv6",
            help="IPv6 for containers (default: when the workspace has an IPv6 default route).",
            show_default=False,
        ),
    ] = None,
    host_network: Annotated[
        bool,
        typer.Option(
            "--host-network",
            help="privileged mode only: dockerd in the current network namespace.",
        ),
    ] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for dockerd.")] = None,
    storage: Annotated[
        StorageName | None, typer.Option(help="Storage driver (default: auto).")
    ] = None,
    port_forwarder: Annotated[
        ForwarderName | None, typer.Option(help="How published ports reach the workspace.")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="Where images and containers live.")] = None,
    dockerd: Annotated[
        str | None,
        typer.Option(help="The dockerd to run (its containerd and docker-proxy from beside it)."),
    ] = None,
    dockerd_arg: Annotated[
        list[str] | None, typer.Option(help="An extra dockerd flag (repeatable; allow-listed).")
    ] = None,
    tcp: Annotated[
        str | None, typer.Option(help="Also listen on TCP ADDR:PORT (needs --tls-dir).")
    ] = None,
    tls_dir: Annotated[
        str | None, typer.Option(help="ca.pem, cert.pem, key.pem for the TCP listener.")
    ] = None,
    auto_ports: Annotated[
        bool | None,
        typer.Option(
            "--auto-ports/--no-auto-ports",
            help="Every TCP listener in the namespace answers on the workspace's loopback "
            "(default: on).",
            show_default=False,
        ),
    ] = None,
    auto_ports_exclude: Annotated[
        str | None, typer.Option(help="Ports never auto-exposed (5432,6000-6063).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    lazy: Annotated[
        bool,
        typer.Option("--lazy", help="Hold the socket; start dockerd on the first connection."),
    ] = False,
    auto_install: Annotated[
        bool, typer.Option("--auto-install", help="As real root: apt-get what is missing.")
    ] = False,
) -> None:
    """Start dockerd in its own namespaces and keep it running (the default command).
    Settings not given here come from DOCKER_UP_* variables, then the config file."""
    from dockerup.verbs import doctor as doctor_verbs
    from dockerup.verbs import settings
    from dockerup.verbs import up as verbs

    if auto_install:
        installed = doctor_verbs.install_deps()
        if installed.packages:
            _exit(emit(installed))
    # (A start by the lazy holder is `docker-up up` exactly: cli/entry.py's quick path.)
    loaded = settings.load_config(
        {
            "mtu": mtu,
            "allow_host_loopback": allow_host_loopback,
            "mode": mode,
            "net": net,
            "net_accel": net_accel,
            "start_timeout": timeout,
            "storage": storage,
            "port_forwarder": port_forwarder,
            "ipv6": ipv6,
            "daemon_net_accel": daemon_net_accel,
            "data_root": data_root,
            "dockerd": dockerd,
            "dockerd_args": dockerd_arg,
            "host_network": host_network,
            "tcp": tcp,
            "tls_dir": tls_dir,
            "auto_ports": auto_ports,
            "auto_ports_exclude": auto_ports_exclude,
        }
    )
    result: Result
    if dry_run:
        result = verbs.dry_run(loaded)
    elif lazy:
        result = verbs.up_lazy(loaded)
    elif detach:
        result = verbs.up_detached(loaded)
    else:
        from dockerup.cli.lines import foreground_notice

        foreground_notice()
        result = verbs.up(loaded, progress, announce)
    _exit(emit(result))


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


config_app = typer.Typer(help="docker-up's settings.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The resolved settings and where each came from (default, file, env, cli)."""
    from dockerup.verbs import settings

    _exit(emit(settings.config_show(settings.load_config({})), as_json))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Is docker-up running, and how: PIDs, mode, socket, network, uptime, restarts.
    With --debug also the start's timings and the processes' identity records."""
    from dockerup.verbs import running, settings

    _exit(emit(running.status(settings.current_paths(), debug=state["debug"]), as_json))


@app.command()
def ports(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The ports that answer in the workspace: published (-p) or auto-exposed, their owner
    (container or command), and the namespace listeners refused, with why."""
    from dockerup.verbs import ports as verbs
    from dockerup.verbs import settings

    _exit(emit(verbs.ports(settings.current_paths()), as_json))


@app.command()
def stop() -> None:
    """Stop docker-up gracefully and wait until everything is gone."""
    from dockerup.verbs import running, settings

    _exit(emit(running.stop(settings.current_paths())))


@app.command()
def logs(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines of each log.")] = 50,
) -> None:
    """docker-up's, dockerd's and the network helper's logs, each line marked with its source."""
    from dockerup.verbs import running, settings

    paths = settings.current_paths()
    emit(running.read_logs(paths, lines))
    if follow:
        try:
            for name, line in running.follow_logs(paths):
                print(f"[{name}] {line}", flush=True)
        except KeyboardInterrupt:
            pass


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    fix: Annotated[
        bool, typer.Option("--fix", help="As root: fix what is safe to fix, then check again.")
    ] = False,
    user: Annotated[
        str | None, typer.Option(help="With --fix as root: the user to give a subuid range.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Every check in full, passing ones too.")
    ] = False,
) -> None:
    """Check every prerequisite; for anything not ok, say exactly how to fix it."""
    import os

    from dockerup.verbs import doctor as verbs

    if fix:
        emit(verbs.fix(user or os.environ.get("SUDO_USER") or None))
    _exit(emit(verbs.report(verbose), as_json))


# The command's own options are its own from its first word on: `exec ls -h` runs `ls -h`.
@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    }
)
def exec(ctx: typer.Context) -> None:
    """Run a command in the daemon's user, mount and network namespaces: docker-up exec -- CMD"""
    from dockerup.verbs import running, settings

    if not ctx.args:
        raise DockerUpError("nothing to run", hint="docker-up exec -- ip addr")
    running.enter(settings.current_paths(), list(ctx.args))


@app.command(
    "run",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def run_command(
    ctx: typer.Context,
    root: Annotated[
        bool, typer.Option("--root", help="Root there, with CAP_NET_ADMIN (as exec).")
    ] = False,
    fallback: Annotated[bool, typer.Option("--fallback", hidden=True)] = False,
) -> None:
    """Your own program in docker-up's network namespace, as you: docker-up run -- CMD
    (your environment, directory, terminal, signals and exit status)."""
    from dockerup.cli.run import run_program

    run_program(list(ctx.args), root, fallback)


@app.command()
def shell() -> None:
    """An interactive shell in the daemon's namespaces (root there, with CAP_NET_ADMIN)."""
    import os

    from dockerup.verbs import running, settings

    running.enter(settings.current_paths(), [os.environ.get("SHELL") or "/bin/sh"])


ENTER_HELP = "Each new interactive shell enters the namespace (docker-up run) when it runs."


@app.command("shell-init")
def shell_init(
    shell: Annotated[Shell, typer.Argument(help="The shell whose rc file runs it.")],
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Only export DOCKER_HOST; start nothing.")
    ] = False,
    enter: Annotated[bool, typer.Option("--enter", help=ENTER_HELP)] = False,
) -> None:
    """Print the snippet for a shell's rc file: DOCKER_HOST, and docker-up started in the
    background when it is not running. Silent, and costs the shell almost nothing."""
    from dockerup.verbs import shell as verbs

    emit(verbs.shell_init(shell.value, start=False if no_start else None, enter=enter))


autostart_app = typer.Typer(
    help="Start docker-up from your shell's rc file, or as a systemd --user service (--systemd)."
)
app.add_typer(autostart_app, name="autostart")


def _shells(shell: list[Shell] | None) -> list[str]:
    import os

    if shell:
        return [s.value for s in shell]
    login = os.path.basename(os.environ.get("SHELL", "bash"))
    return [login] if login in ("bash", "zsh", "fish") else ["bash"]


ShellOpt = Annotated[
    list[Shell] | None, typer.Option("--shell", help="Repeatable (default: $SHELL's).")
]
SystemdOpt = Annotated[
    bool,
    typer.Option(
        "--systemd",
        help="A systemd --user service (Delegate=yes: resource limits apply) instead of the "
        "rc file.",
    ),
]


@autostart_app.command("enable")
def autostart_enable(
    shell: ShellOpt = None,
    lazy: Annotated[
        bool | None,
        typer.Option("--lazy/--no-lazy", help="Socket activation (default: lazy-start)."),
    ] = None,
    enter: Annotated[bool, typer.Option("--enter", help=ENTER_HELP)] = False,
    systemd: SystemdOpt = False,
) -> None:
    """Add docker-up's block (and shell completion) to the rc file(s); running it twice
    leaves one block. --systemd: write, enable and start docker-up's user unit instead."""
    from dockerup.verbs import shell as verbs
    from dockerup.verbs import unit

    emit(unit.enable() if systemd else verbs.autostart(_shells(shell), True, lazy, enter))


@autostart_app.command("disable")
def autostart_disable(shell: ShellOpt = None, systemd: SystemdOpt = False) -> None:
    """Remove exactly docker-up's block (and the docker context and completion).
    --systemd: stop and remove docker-up's user unit, and what enabling it created."""
    from dockerup.verbs import shell as verbs
    from dockerup.verbs import unit

    emit(unit.disable() if systemd else verbs.autostart([s.value for s in shell or Shell], False))


@autostart_app.command("status")
def autostart_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    systemd: SystemdOpt = False,
) -> None:
    """Which rc files have docker-up's block (--systemd: docker-up's user unit)."""
    from dockerup.verbs import shell as verbs
    from dockerup.verbs import unit

    _exit(emit(unit.status() if systemd else verbs.autostart_status(), as_json))


@app.command("install-deps")
def install_deps() -> None:
    """Install missing dockerd, slirp4netns, uidmap, iptables with apt (as real root);
    otherwise print the command."""
    from dockerup.verbs import doctor as verbs

    _exit(emit(verbs.install_deps()))


# What the top-level command answers itself: these never mean `up`.


def take_debug(
    args: list[str], takes_value: frozenset[str] = frozenset()
) -> tuple[bool, list[str]]:
    """--debug wherever it stands among docker-up's own options, before or after the verb;
    not as an option's value (`--dockerd-arg --debug` is dockerd's), not after `--` and not
    inside the command that `exec` or `run` runs (those are the command's own)."""
    debug, rest = False, list[str]()
    for i, arg in enumerate(args):
        if arg == "--":
            return debug, rest + args[i:]
        if arg == "--debug" and not (rest and rest[-1] in takes_value):
            debug = True
            continue
        rest.append(arg)
        if rest[:1] in (["exec"], ["run"]) and len(rest) > 1 and not arg.startswith("-"):
            return debug, rest + args[i + 1 :]
    return debug, rest


def value_options(command: Any) -> frozenset[str]:
    """Every option of any command that takes a value (the next word is that value). The
    command is click's, which Typer vendors privately: read by duck typing."""
    found: set[str] = set()
    for p in command.params:
        if p.param_type_name == "option" and not p.is_flag and not p.count:
            found.update(p.opts)
    for sub in getattr(command, "commands", {}).values():
        found |= value_options(sub)
    return frozenset(found)


def default_to_up(args: list[str]) -> list[str]:
    """`docker-up [OPTIONS]` means `docker-up up [OPTIONS]` (argv.means_up)."""
    return ["up", *args] if means_up(args) else args


def main() -> None:
    command = typer.main.get_command(app)  # what app() builds, built once
    debug, args = take_debug(sys.argv[1:], value_options(command))
    state["debug"] = debug

    def run() -> int:
        try:
            command(args=default_to_up(args), prog_name="docker-up")
        except SystemExit as e:  # Typer's (and click's) way to end a command
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return 0

    sys.exit(guarded(run, lambda: state["debug"]))


if __name__ == "__main__":
    main()
