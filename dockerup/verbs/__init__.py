"""The verbs: what each command does, called by the CLI (dockerup/cli), returning typed
results (dockerup/results.py) that the CLI renders. One module per group:

  resolve.py   resolve the configuration, the context of a command, the plan; `config show`
  up.py        up (foreground, detached, lazy, activated) and --dry-run
  running.py   status, stop, logs, exec/shell
  ports.py     ports: what is published and auto-exposed, and what was refused
  doctor.py    doctor, doctor --fix, install-deps
  shell.py     shell-init, autostart, shell completion
  unit.py      autostart --systemd: docker-up as a systemd --user service (Delegate=yes)

They never print and never exit: failures are DockerUpError, which the CLI renders.
Must not touch: the CLI (typer, rich); they call the packages below them and nothing
calls them but the CLI.
"""
