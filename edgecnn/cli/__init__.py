"""The `edgecnn` command line: a thin layer that parses options, builds a stage config and calls the
library. Each stage's commands live in their own module here and import TensorFlow only when they run.

    edgecnn train --out runs/d
    edgecnn export runs/d
    edgecnn bench runs/d
"""
from __future__ import annotations

import importlib
import importlib.util

import click

from edgecnn import __version__

# module, command names it defines (registered lazily so `edgecnn --help` imports no TensorFlow)
COMMAND_MODULES = {
    "edgecnn.cli.train": ("train", "tune"),
    "edgecnn.cli.export": ("export", "inspect"),
    "edgecnn.cli.bench": ("bench", "predict"),
    "edgecnn.cli.device": ("emulate",),
    "edgecnn.cli.demo": ("demo",),
}


class _Group(click.Group):
    def list_commands(self, ctx):
        return sorted(name for module, names in COMMAND_MODULES.items() if _exists(module) for name in names)

    def get_command(self, ctx, name):
        for module, names in COMMAND_MODULES.items():
            if name in names and _exists(module):
                return getattr(importlib.import_module(module), name.replace("-", "_"))
        return None


def _exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecnn")
def main():
    """edgecnn: a small CNN classifier from training to int8 on an edge device, with parity proven."""


cli = main
