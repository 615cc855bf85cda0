"""Helpers shared by the CLI command modules: user errors as one line, quiet TensorFlow logs."""
from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import os
import re
import sys
import threading

import click

from edgecnn.errors import EdgecnnError


# absl's C++ lines ("I0000 00:00:17... port.cc:153] oneDNN ...") and its pre-init banner ignore
# TF_CPP_MIN_LOG_LEVEL in TensorFlow 2.21, and LiteRT logs "INFO: [file.cc:43] ..." lines, so the CLI
# filters them out of its stderr.
_ABSL_LINE = re.compile(rb"^([IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]|WARNING: All log messages before absl"
                        rb"|INFO: \[[\w.]+:\d+\] )")
_SETTLED = b"\x00edgecnn-stderr-settled\n"  # a line only this process writes, never shown
_settle_waiters: list = []
_pump_thread: threading.Thread | None = None


def _filter_stderr() -> None:
    global _pump_thread
    if _pump_thread is not None:  # installed once per process
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump():
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if line == _SETTLED:
                    if _settle_waiters:
                        _settle_waiters.pop(0).set()
                elif not _ABSL_LINE.match(line):
                    os.write(saved, line)

    thread = _pump_thread = threading.Thread(target=pump, daemon=True)  # marks the filter installed
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees EOF and drains
        thread.join(timeout=2)
        # What comes after this is the runtimes' static destructors at process exit (LiteRT's
        # "DestroyAccelerator" lines): the command has said all it has to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    atexit.register(restore)


def settle_stderr(timeout: float = 2.0) -> None:
    """Wait until what was written to stderr so far has passed the filter: its pump is a thread, so a line on
    stdout could otherwise overtake a warning printed just before it ("parity gates passed" above its warning)."""
    if _pump_thread is None or not _pump_thread.is_alive():  # no filter, or the process is leaving
        return
    sys.stderr.flush()
    done = threading.Event()
    _settle_waiters.append(done)
    os.write(2, _SETTLED)
    done.wait(timeout)


def warn(text: str) -> None:
    """`warning: text` on stderr, wrapped to the terminal, before anything printed after it."""
    click.echo(wrap(f"warning: {text}"), err=True)
    settle_stderr()


def quiet_tf() -> None:
    """Silence TensorFlow's C++ log chatter unless EDGECNN_TF_LOGS=1."""
    if os.environ.get("EDGECNN_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "PYTEST_CURRENT_TEST" not in os.environ:
        _filter_stderr()


WRITE_ERRORS = {errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT}  # one line, not a traceback


def user_errors(fn):
    """Run a command body; an `EdgecnnError` becomes `error: <message>` on stderr and exit code 2. Adds the
    `-q/--quiet` option every command has: nothing on stdout, only errors, warnings and failed gates (stderr)."""

    @functools.wraps(fn)
    def wrapper(*args, quiet=False, **kwargs):
        quiet_tf()
        try:
            if quiet:
                with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                    return fn(*args, **kwargs)
            return fn(*args, **kwargs)
        except EdgecnnError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:
            if e.errno not in WRITE_ERRORS:
                raise
            click.echo(f"error: cannot write {e.filename or 'the output'}: {e.strerror or os.strerror(e.errno)}",
                       err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return click.option("-q", "--quiet", is_flag=True,
                        help="Print nothing on stdout; errors, warnings and failed gates still go to stderr.")(wrapper)


def gate_options(size_ratio: bool = False):
    """The parity-gate options, the same in `export` and `bench` (edgecnn.contracts.gates.Gates): off by
    default; a broken gate fails the command (exit 1) with 'parity gate failed: ...'."""
    opts = [
        click.option("--max-acc-drop", type=float, default=None, metavar="POINTS",
                     help="Gate: fail when an artifact's accuracy is more than POINTS (percent) below the Keras model."),
        click.option("--min-agreement", type=float, default=None, metavar="FRACTION",
                     help="Gate: fail when top-1 agreement with the Keras model is below FRACTION (e.g. 0.99)."),
        click.option("--max-abs-diff", type=float, default=None, metavar="P",
                     help="Gate: fail when a probability differs from the Keras model's by more than P."),
        click.option("--max-class-drop", type=float, default=None, metavar="POINTS",
                     help="Gate: fail when one class's recall is more than POINTS below the Keras model's (what "
                          "an accuracy drop hides on imbalanced data: 2 of 9 defects lost is 22 points of their "
                          "recall, 0.65 of accuracy on 309 images)."),
    ]
    if size_ratio:
        opts.append(click.option("--max-size-ratio", type=float, default=None, metavar="R",
                                 help="Gate: fail when an int8 file is more than R times its fp32 twin."))

    def decorate(fn):
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorate


def report_violations(violations) -> None:
    """One line per broken gate on stderr, as `export` and `bench` both say it."""
    for v in violations:
        click.echo(f"parity gate failed: {v}", err=True)


def report_verdict(gates, violations, judged: int, n_test: int, warnings=(), smallest=None) -> None:
    """The gates' verdict, in `export`, `bench` and `demo` alike: `warnings` about the evidence (a reference stuck
    on one class; said with or without gates) and thin evidence first (`smallest`: the smallest test class,
    {"name", "images"}), then one line per broken gate (stderr), or one line saying they passed. Nothing more when
    no gate was set."""
    for w in warnings:
        warn(w)
    if not gates.active:
        return
    for w in gates.thin_evidence(n_test, smallest):
        warn(w)
    report_violations(violations)
    if not violations:
        click.echo(f"parity gates passed: {judged} row(s) within {gates.describe()} ({n_test} test images)")


def wrap(text: str) -> str:
    """`text` wrapped to the terminal (COLUMNS, else the terminal, else 100 columns), long names kept whole."""
    import textwrap

    from edgecnn.bench.report import console_width

    return "\n".join(textwrap.wrap(text, console_width(), break_long_words=False, break_on_hyphens=False,
                                    subsequent_indent="  ")) or text
