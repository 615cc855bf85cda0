"""`edgecnn emulate`: the on-device script on an emulated aarch64 Python (QEMU), compared with this machine.

    edgecnn emulate runs/d                 # RUN/export/model_int8.tflite on all of the run's data
    edgecnn emulate --model m.tflite --manifest manifest.json --npz data.npz --json
"""
from __future__ import annotations

import sys

import click

from edgecnn.cli.common import quiet_tf


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": []}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def emulate(args):
    """aarch64 parity under QEMU: the int8 model's predictions on an arm64 Python (Raspberry Pi 4/5 ISA)
    against this machine's; exit 1 below --min-agreement. `edgecnn emulate --help` for the options."""
    from edgecnn.device.emulate import main

    quiet_tf()
    sys.exit(main(list(args), prog="edgecnn emulate"))
