"""The face: the Typer app (main.py), the fast entry path that starts the namespace child
before the heavy imports (entry.py), the argv before Typer (argv.py), rendering as text or
as the versioned JSON envelope (render.py, lines.py, doctor_text.py), and the one place
that turns a DockerUpError into a message and an exit code (guard.py).

Must not touch: the system. It parses, calls a verb, renders what the verb returns; the
only layer that prints and chooses exit codes (tests/unit/test_layout.py)."""
