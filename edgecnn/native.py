"""Ground floor: what native runtimes print and use. Capturing their log lines on file descriptor 2, the
process's peak memory, installed package versions, and an exception as one line.

Python::

    from edgecnn.native import native_stderr
    with native_stderr() as lines:
        session = open_session("tflite", "m.tflite")   # LiteRT's INFO lines land in `lines`
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

from edgecnn.script.edgecnn_infer import peak_rss_mb  # noqa: F401  (one implementation, shared with the device)

__all__ = ["native_stderr", "peak_rss_mb", "package_version", "one_line", "MemoryWindow"]


@contextlib.contextmanager
def native_stderr(sink: list | None = None, echo: bool | None = None) -> Iterator[list]:
    """Capture what native code (LiteRT, WebGPU, XNNPACK, OpenVINO) writes to file descriptor 2.

    The captured lines are appended to `sink` (also yielded), so a caller can turn a runtime's log into
    a one-line reason. Set EDGECNN_NATIVE_LOGS=1 (or EDGECNN_DEBUG=1) to let them through to the terminal.
    """
    sink = [] if sink is None else sink
    if echo is None:
        echo = os.environ.get("EDGECNN_NATIVE_LOGS") == "1" or bool(os.environ.get("EDGECNN_DEBUG"))
    fd = 2  # native code writes to the descriptor, whatever object sys.stderr is (pytest, click's runner)
    try:
        os.fstat(fd)
    except OSError:  # no stderr at all: nothing to capture
        yield sink
        return
    _flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield sink
        finally:
            _flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            sink.extend(line for line in text.splitlines() if line.strip())
            if echo and text:
                sys.stderr.write(text)


def _flush() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def package_version(dist: str) -> str:
    """Installed version of a distribution, or '?'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def one_line(e: BaseException) -> str:
    """An exception as one line: the message of a user error, else its type and the first line of its message."""
    from edgecnn.errors import EdgecnnError

    msg = " ".join(str(e).split()) if str(e).strip() else ""
    msg = msg if len(msg) <= 300 else msg[:297] + "..."
    return msg if isinstance(e, EdgecnnError) else f"{type(e).__name__}: {msg}".rstrip(": ")


def _status_mb(key: str):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


class MemoryWindow:
    """The process's peak resident memory within a window, and how far it rose above the start.

    On Linux the kernel's high-water mark is reset at the start (`/proc/self/clear_refs`, value 5), so each
    window (one bench row) has its own peak, as LiteRT's benchmark reports a peak memory footprint per model.
    Elsewhere the peak is the process's running peak and `own` is False.
    """

    def __enter__(self) -> "MemoryWindow":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.own = _status_mb("VmHWM") is not None
        except OSError:
            self.own = False
        self.start_mb = _status_mb("VmRSS")
        self.peak_mb = self.footprint_mb = None
        return self

    def __exit__(self, *exc) -> None:
        self.peak_mb = (_status_mb("VmHWM") if self.own else None) or peak_rss_mb()
        if self.own and self.start_mb is not None and self.peak_mb is not None:
            self.footprint_mb = round(max(0.0, self.peak_mb - self.start_mb), 1)


_EXIT_QUIET = []


def quiet_tensorflow() -> None:
    """Import TensorFlow and Keras with their start-up log lines (absl's pre-init banner, oneDNN, CUDA probes,
    which ignore TF_CPP_MIN_LOG_LEVEL in TF 2.21) captured, and silence the runtimes' teardown lines at exit
    (LiteRT's "DestroyAccelerator"), so the Python API prints no native noise. EDGECNN_NATIVE_LOGS=1 opts out.
    The stages call it before they first touch TensorFlow; it is cheap once TensorFlow is imported."""
    if os.environ.get("EDGECNN_NATIVE_LOGS") == "1" or os.environ.get("EDGECNN_TF_LOGS") == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # errors arrive as Python exceptions; level 2 lets
    # through ERROR lines that are not errors ("NodeDef mentions attribute use_unbounded_threadpool")
    if "tensorflow" not in sys.modules:
        with native_stderr():
            import tensorflow as tf  # noqa: F401
            import keras  # noqa: F401

            tf.config.list_logical_devices("GPU")  # the CUDA probe logs "failed call to cuInit" here, once
    _drop_retracing_advice()
    quiet_at_exit()


def _is_not_retracing_advice(record) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def _drop_retracing_advice() -> None:
    """Keep TensorFlow's "N out of the last M calls to <function ...one_step_on_data_distributed> triggered
    tf.function retracing" off the user's screen: each Keras model that export, bench or a tuning trial loads
    traces its own predict function, so a third export in one Python session printed four such 400-character
    warnings. It is advice to the code's author about tf.function, not something a user can act on; every other
    TensorFlow warning still shows."""
    import logging

    logging.getLogger("tensorflow").addFilter(_is_not_retracing_advice)  # a filter already there is not added twice


def quiet_at_exit() -> None:
    """Silence file descriptor 2 when the process exits (LiteRT's accelerator teardown lines); once."""
    if _EXIT_QUIET or os.environ.get("EDGECNN_NATIVE_LOGS") == "1":
        return
    import atexit

    _EXIT_QUIET.append(True)
    atexit.register(_quiet_exit)


def _quiet_exit() -> None:
    """At exit, after Python's own output: native static destructors have nothing the user needs to read."""
    _flush()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass
