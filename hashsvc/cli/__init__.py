"""The `hashsvc` command line: a thin adapter over the core.

Output is JSON lines on stdout (one per file or per hash), human messages on stderr.
Exit codes: 0 = success / no match, 1 = a match, 2 = an error for at least one input.
Every command module imports its heavy dependencies (numba kernels, FAISS, FastAPI)
inside the command, so `hashsvc --help` and `hashsvc hash` start fast.
"""

from __future__ import annotations

import typer

from hashsvc.cli import keys, lists, scan
from hashsvc.cli.hash_cmd import hash_cmd
from hashsvc.cli.match import match_cmd
from hashsvc.cli.serve import serve_cmd

app = typer.Typer(
    help="Perceptual-hash matching against trusted hash lists of known abusive media.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("hash")(hash_cmd)
app.command("match")(match_cmd)
app.command("serve")(serve_cmd)
app.command("scan")(scan.scan_cmd)
app.add_typer(lists.app, name="lists")
app.add_typer(keys.app, name="keys")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
