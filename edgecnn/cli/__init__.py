"""The `edgecnn` command line: a thin layer that parses options, builds a stage config and calls the
library. Each stage's commands live in their own module here and import TensorFlow only when they run.

    edgecnn train --out runs/d
    edgecnn export runs/d
    edgecnn bench runs/d
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from edgecnn import __version__

# module, command names it defines (registered lazily so `edgecnn --help` imports no TensorFlow)
COMMAND_MODULES = {
    "edgecnn.cli.train": ("train", "tune", "import"),
    "edgecnn.cli.export": ("export", "inspect"),
    "edgecnn.cli.bench": ("bench", "predict"),
    "edgecnn.cli.device": ("emulate",),
    "edgecnn.cli.report": ("report",),
    "edgecnn.cli.demo": ("demo",),
}
COMMAND_FUNCTIONS = {"import": "import_"}  # command names that are Python keywords
# the pipeline's order, which `edgecnn --help` lists them in
ORDER = ("demo", "train", "tune", "import", "export", "inspect", "bench", "predict", "emulate", "report")


class _Group(click.Group):
    def list_commands(self, ctx):
        names = {name for module, names in COMMAND_MODULES.items() if _exists(module) for name in names}
        return [n for n in ORDER if n in names] + sorted(names - set(ORDER))

    def get_command(self, ctx, name):
        for module, names in COMMAND_MODULES.items():
            if name in names and _exists(module):
                return getattr(importlib.import_module(module), COMMAND_FUNCTIONS.get(name, name.replace("-", "_")))
        return None

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.5)
            ctx.fail(f"no such command '{name}'" + (f": did you mean '{close[0]}'?" if close else
                                                   f" (commands: {', '.join(self.list_commands(ctx))})"))
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx, formatter):
        """Each command with its whole summary (click would cut it at 45 characters with '...')."""
        rows = [(n, self.get_command(ctx, n).get_short_help_str(limit=200)) for n in self.list_commands(ctx)]
        with formatter.section("Commands (in pipeline order)"):
            formatter.write_dl(rows)


def _exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="edgecnn")
def main():
    """edgecnn: a small CNN classifier from training to int8 on an edge device, with parity proven."""


cli = main


def run() -> None:
    """The `edgecnn` command: `main` as a program.

    A command that fails after TensorFlow has built a `tf.data` pipeline (an unreadable image met while training
    reads the folder) leaves that pipeline referenced by its error's traceback. Python then destroys it while
    shutting down, where its parallel-map iterator waits for worker threads that can no longer run (TF 2.21): the
    command printed its one-line error and hung. So a failing command runs its exit handlers with Python whole
    and leaves without the shutdown.
    """
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code == 0 or "tensorflow" not in sys.modules:
            raise
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        import atexit

        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        atexit._run_exitfuncs()
        os._exit(code)
