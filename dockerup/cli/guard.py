"""Where every command's errors end, shared by both ways in (entry.py's quick starts and the
Typer app in main.py), so that neither imports the other for it."""

from __future__ import annotations

from collections.abc import Callable


def guarded(run: Callable[[], int], debug: Callable[[], bool] = lambda: False) -> int:
    """A DockerUpError is the user's to fix and gets no traceback; anything else is our bug,
    shown in one line unless --debug asks for the traceback."""
    from dockerup.errors import DockerUpError  # small; the renderer only when needed
    from dockerup.namespace.early import Interrupted

    try:
        return run()
    except Interrupted as e:
        # A start stopped before the executor's own unwinding (supervise.run) could say it:
        # whatever it had begun is gone by now (early.stop_on_signals).
        from dockerup.cli import lines

        lines.progress(f"stopped ({e}) before dockerd was ready")
        return 130
    except DockerUpError as e:
        if debug():
            import traceback

            traceback.print_exc()
        from dockerup.cli import lines

        lines.error(e)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if debug():
            import traceback

            traceback.print_exc()
        from dockerup.cli import lines

        lines.internal_error(e)
        return 70
