"""Benchmark TFLite artifacts on boards over SSH with the on-device script: one bench row per artifact.

The system OpenSSH client (`ssh`, `scp`) copies the script, the artifacts, the manifest and a test subset
to a temporary folder on the board, runs `edgecnn_infer.py --bench --json` there with the board's Python,
collects the JSON and removes the folder. Key or agent authentication only (BatchMode: never a prompt).

Python::

    from edgecnn.device.remote import run_remote, write_npz
    write_npz("subset.npz", x_test[:300], y_test[:300])          # preprocessed float32 NHWC + labels
    rows = run_remote("pi@raspberrypi.local", ["RUN/export/model_int8.tflite"], "RUN/export/manifest.json",
                      "subset.npz", threads=4)

CLI::

    edgecnn bench RUN --remote pi@raspberrypi.local --remote pi@10.0.0.7:2222
    python -m edgecnn.device.remote pi@raspberrypi.local --model RUN/export/model_int8.tflite \\
        --manifest RUN/export/manifest.json --npz subset.npz
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgecnn.device import script_path
from edgecnn.errors import ConfigError
from edgecnn.runtimes.base import KERNELS, check_kernels
from edgecnn.script.edgecnn_infer import KERNEL_FLAGS, ROW_KEYS

__all__ = ["run_remote", "write_npz", "parse_host", "Host", "ROW_KEYS"]

SCRIPT = "edgecnn_infer.py"
DATA = "data.npz"


@dataclass(frozen=True)
class Host:
    """A board: USER@HOST[:PORT] (IPv6 as USER@[ADDR]:PORT)."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


def parse_host(spec: str) -> Host:
    """'USER@HOST[:PORT]' -> Host.

    Raises:
        ConfigError: an empty host or a port that is not a number in 1..65535.
    """
    user, _, rest = spec.rpartition("@")
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::([^:]*))?", rest.strip())
    if not m or not (m.group(1) or m.group(3)):
        raise ConfigError(f"'{spec}' is not USER@HOST[:PORT]")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"'{spec}': port must be a number in 1..65535")
    # a name or address, never an option for ssh: letters, digits, '.', '-', '_' (and ':' '%' inside [...])
    if not (re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", host) or (m.group(1) and re.fullmatch(r"[0-9A-Fa-f:.%a-z]+", host))):
        raise ConfigError(f"'{spec}': '{host}' is not a host name or address")
    if user and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", user):
        raise ConfigError(f"'{spec}': '{user}' is not a user name")
    return Host(host=host, user=user or None, port=int(port) if port else None)


def write_npz(path, x, y=None) -> Path:
    """Write a test subset the script reads with `--npz`: preprocessed float32 NHWC `x`, optional labels `y`."""
    import numpy as np

    arrays = {"x": np.asarray(x, dtype=np.float32), "preprocessed": np.array(1)}
    if y is not None:
        arrays["y"] = np.asarray(y).reshape(-1).astype(np.int64)
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


class RemoteError(Exception):
    """A host-level failure: its message is the failed row's reason (what happened and how to fix it)."""


class _Ssh:
    """ssh/scp command lines for one host with a deadline shared by every call."""

    def __init__(self, host: Host, timeout: float, ssh_options: Sequence[str], identity: Optional[str],
                 accept_new_host_keys: bool = False):
        self.host, self.timeout = host, timeout
        self.deadline = time.monotonic() + timeout
        # OpenSSH takes the first value of an option: the caller's explicit options first, then ours. An unknown
        # host key is refused unless asked for (a board's first contact is where a man in the middle would sit).
        opts = [*ssh_options, "BatchMode=yes", f"ConnectTimeout={max(1, int(min(timeout, 15)))}",
                f"StrictHostKeyChecking={'accept-new' if accept_new_host_keys else 'yes'}",
                "ServerAliveInterval=5", "ServerAliveCountMax=3", "LogLevel=ERROR"]
        self.common = [a for o in opts for a in ("-o", o)] + (["-i", str(identity)] if identity else [])

    def _call(self, argv: list, what: str) -> subprocess.CompletedProcess:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RemoteError(self._timed_out(what))
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            raise RemoteError(self._timed_out(what)) from None

    def _timed_out(self, what: str) -> str:
        return f"timed out after {self.timeout:g} s ({what}) on {self.host}: raise the per-host timeout"

    def run(self, command: str, what: str) -> subprocess.CompletedProcess:
        """Run a shell command on the host; ssh's own failures (exit 255) raise RemoteError."""
        port = ["-p", str(self.host.port)] if self.host.port else []
        p = self._call(["ssh", *self.common, *port, "--", self.host.target, command], what)
        if p.returncode == 255:
            raise RemoteError(self._explain(p.stderr))
        return p

    def put(self, files: list, remote_dir: str) -> None:
        port = ["-P", str(self.host.port)] if self.host.port else []
        p = self._call(["scp", "-q", *self.common, *port, "--", *(str(Path(f).resolve()) for f in files),
                        f"{self.host.target}:{remote_dir}/"], "copying files")
        if p.returncode != 0:
            raise RemoteError(f"copying files to {self.host} failed: {_last_line(p.stderr)}")

    def _explain(self, stderr: str) -> str:
        h, last = self.host, _last_line(stderr)
        port = f"-p {h.port} " if h.port else ""
        if "Permission denied" in stderr or "Too many authentication failures" in stderr:
            return (f"authentication failed on {h} ({last}): install your public key with "
                    f"ssh-copy-id {port}{h.target}, load it into ssh-agent, or pass its file as the identity")
        if re.search(r"No \S+ host key is known for", stderr):
            scan = f"ssh-keyscan {'-p ' + str(h.port) + ' ' if h.port else ''}{h.host} >> ~/.ssh/known_hosts"
            return (f"the host key of {h} is not known: add it once, checking its fingerprint ({scan}), or pass "
                    "--accept-new-host-keys to accept it on first contact")
        if "Host key verification failed" in stderr or "IDENTIFICATION HAS CHANGED" in stderr:
            return (f"host key of {h.host} does not match known_hosts ({last}): if the board was reinstalled, "
                    f"ssh-keygen -R {h.host}, then connect once with ssh {port}{h.target}")
        if any(s in stderr for s in ("Connection refused", "timed out", "No route to host", "Could not resolve",
                                     "Network is unreachable", "Name or service not known", "Connection reset",
                                     "Connection closed", "closed by remote host")):
            return (f"cannot reach {h} ({last}): check the address and port, that the board is on the network "
                    "and that its SSH server runs (sudo systemctl enable --now ssh)")
        return f"ssh to {h} failed: {last or 'exit status 255'}"


def shell_words(command: str) -> str:
    """A command for the board's shell with every word quoted; a leading `~/` becomes "$HOME"/ (the shell would
    not expand a quoted tilde), so nothing in it can run as a command of its own.

    Raises:
        ConfigError: unbalanced quotes, or `~user` (name the path instead).
    """
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise ConfigError(f"board Python command {command!r}: {e}") from None
    if not words:
        raise ConfigError("empty board Python command")
    out = []
    for w in words:
        if w == "~" or w.startswith("~/"):
            out.append('"$HOME"' + (shlex.quote(w[1:]) if len(w) > 1 else ""))
        elif w.startswith("~"):
            raise ConfigError(f"board Python command: write {w!r} as a full path (~user is not expanded)")
        else:
            out.append(shlex.quote(w))
    return " ".join(out)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("INFO:")]
    return lines[-1][:300] if lines else ""


def _script_error(stderr: str) -> str:
    """The on-device script's one-line error, or the last line of a traceback."""
    for ln in reversed((stderr or "").splitlines()):
        if "edgecnn_infer.py: error:" in ln:
            return ln.split("error:", 1)[1].strip()
    return _last_line(stderr)


def _row(**values) -> dict:
    return {**{k: None for k in ROW_KEYS}, "format": "tflite", "backend": "tflite", **values}


def _preflight(ssh: _Ssh, python: str, remote_dir: str) -> dict:
    """The board's device info and runtime from `edgecnn_infer.py --info`; RemoteError when unusable."""
    p = ssh.run(f"cd {shlex.quote(remote_dir)} && {python} {SCRIPT} --info", "checking Python and the runtime")
    err = p.stderr or ""
    if p.returncode in (126, 127):  # the shell's "command not found" / "not executable"
        return _raise(f"no Python on {ssh.host} ({_last_line(err)}): install it (sudo apt install python3) "
                      f"or name the board's interpreter (e.g. ~/venv/bin/python)")
    if "No module named 'numpy'" in err:
        _raise(f"numpy is missing on {ssh.host}: pip install numpy (in the board's Python: {python})")
    if p.returncode != 0:
        reason = _script_error(err)
        if "TFLite runtime" in reason or "pip install" in reason:
            reason += f" (on {ssh.host}, for {python})"
        _raise(reason or f"{SCRIPT} --info failed on {ssh.host} (exit {p.returncode})")
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return _raise(f"unexpected output from {SCRIPT} --info on {ssh.host}: {_last_line(p.stdout)}")


def _raise(reason: str):
    raise RemoteError(reason)


def run_remote(host_spec: str, model_files: Sequence, manifest_path, npz_path, *, threads: int = 1,
               runs: int = 50, warmup: int = 10, min_s: float = 0.0, warmup_min_s: float = 0.0, max_s: float = 1e9,
               timeout: float = 300.0, ssh_options: Sequence[str] = (), identity: Optional[str] = None,
               python: Optional[str] = None, allow_modified: bool = False,
               accept_new_host_keys: bool = False, name: Optional[str] = None, kernels: str = "xnnpack") -> list:
    """Run each TFLite model on one board over SSH with the on-device script; never raises for host problems.

    Args:
        host_spec: "USER@HOST[:PORT]" (IPv6: "USER@[ADDR]:PORT"); USER defaults to the ssh config's.
        model_files: .tflite paths; their names must be the manifest's artifact files.
        manifest_path: the export manifest (copied as manifest.json beside the models).
        npz_path: the test subset (`write_npz`: preprocessed float32 `x`, labels `y`), or raw pixels in `x`.
        threads: interpreter threads on the board.
        runs: timed inferences per model (after `warmup` untimed ones), at least ...
        min_s, warmup_min_s, max_s: ... and the time bounds of `edgecnn bench`'s loop, so board rows and local
            rows in one table are timed by the same rule.
        timeout: seconds for everything on this host (connect, copy, every run, clean-up).
        ssh_options: extra OpenSSH options as "Key=Value" (e.g. "UserKnownHostsFile=/tmp/kh").
        identity: private key file (`ssh -i`); default: the agent and ~/.ssh keys.
        python: the board's Python command (e.g. "~/edgecnn-venv/bin/python" on Raspberry Pi OS, where pip
            installs into a venv); default: $EDGECNN_REMOTE_PYTHON, else "python3". Every word is quoted.
        allow_modified: let the script run a model whose sha256 differs from the manifest (refused otherwise).
        accept_new_host_keys: accept an unknown host key on first contact (refused otherwise; the rows say so).
        name: the board's name in the rows' device (default: what the board reports).
        kernels: the board's TFLite CPU kernels: "xnnpack" (the default delegate), "builtin" (XNNPACK off) or
            "reference" (the reference kernels: bit-exact with export's figures for them on any machine).
    Returns:
        One bench row (dict, the bench row keys) per model, with device = "<board name> (<host_spec>)",
        status "ok" or "failed" with its reason, plus "host", "predictions" (top-1 per test image),
        "probs" (dequantized probabilities), "n", "cpu_count", "machine" and "python". When the host
        cannot be used at all (unreachable, authentication refused, no Python, no numpy, no TFLite
        runtime, timeout) the list holds one failed row (artifact "*") whose reason says how to fix it.
    Raises:
        ConfigError: a malformed host_spec, a missing local file, or two models with the same file name.
    """
    host = parse_host(host_spec)
    check_kernels(kernels)
    models = [Path(m) for m in model_files]
    files = [script_path(), Path(manifest_path), Path(npz_path), *models]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"no such file: {', '.join(missing)}")
    if len({m.name for m in models}) != len(models):
        raise ConfigError("model files must have distinct names (they are copied into one folder)")
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        return [_row(artifact="*", device=str(host), status="failed",
                     reason="no OpenSSH client here: install it (apt install openssh-client)", host=str(host))]
    ssh = _Ssh(host, timeout, ssh_options, identity, accept_new_host_keys)
    python = shell_words(python or os.environ.get("EDGECNN_REMOTE_PYTHON") or "python3")
    rows, remote_dir = [], None
    try:
        p = ssh.run("mktemp -d \"${TMPDIR:-/tmp}/edgecnn.XXXXXX\"", "creating a temporary folder")
        remote_dir = p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None
        if not remote_dir:
            _raise(f"cannot create a temporary folder on {host}: {_last_line(p.stderr)}")
        _copy(ssh, files, remote_dir, manifest_path)
        info = _preflight(ssh, python, remote_dir)
        device = f"{name or info.get('device') or host.host} ({host})"
        flags = (f"--bench {int(runs)} --warmup {int(warmup)} --min-time {float(min_s)!r} "
                 f"--warmup-time {float(warmup_min_s)!r} --max-time {float(max_s)!r}"
                 + (" --allow-modified" if allow_modified else "") + "".join(" " + f for f in KERNEL_FLAGS[kernels]))
        for model in models:
            rows.append(_run_model(ssh, python, remote_dir, model, device, threads, flags))
    except RemoteError as e:
        rows.append(_row(artifact="*", device=str(host), threads=threads, status="failed", reason=str(e),
                         host=str(host)))
    finally:
        if remote_dir:
            _cleanup(ssh, remote_dir)
    if accept_new_host_keys:
        for r in rows:
            r["note"] = "; ".join(filter(None, [r.get("note"), "host key accepted on first contact "
                                                "(--accept-new-host-keys)"]))
    return rows


def _copy(ssh: _Ssh, files: list, remote_dir: str, manifest_path) -> None:
    """Copy everything, naming the manifest manifest.json and the subset data.npz."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgecnn-remote-") as tmp:
        staged = []
        names = {Path(manifest_path): "manifest.json", files[2]: DATA, files[0]: SCRIPT}
        for f in files:
            name = names.get(f, f.name)
            if name == f.name:
                staged.append(f)
            else:
                link = Path(tmp) / name
                shutil.copyfile(f, link)
                staged.append(link)
        ssh.put(staged, remote_dir)


def _run_model(ssh: _Ssh, python: str, remote_dir: str, model: Path, device: str, threads: int, timing: str) -> dict:
    cmd = (f"cd {shlex.quote(remote_dir)} && {python} {SCRIPT} --model {shlex.quote(model.name)} "
           f"--manifest manifest.json --npz {DATA} {timing} --threads {int(threads)} --json --probs")
    p = ssh.run(cmd, f"running {model.name}")
    host = str(ssh.host)
    if p.returncode != 0:
        return _row(artifact=model.stem, file=model.name, device=device, threads=threads, status="failed",
                    reason=_script_error(p.stderr) or f"exit status {p.returncode}", host=host)
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return _row(artifact=model.stem, file=model.name, device=device, threads=threads, status="failed",
                    reason=f"no JSON from {SCRIPT}: {_last_line(p.stdout) or _last_line(p.stderr)}", host=host)
    out.pop("results", None)
    return {**_row(), **out, "device": device, "host": host}


def _cleanup(ssh: _Ssh, remote_dir: str) -> None:
    ssh.deadline = max(ssh.deadline, time.monotonic() + 15)  # clean up even after a timeout
    try:
        ssh.run(f"rm -rf {shlex.quote(remote_dir)}", "removing the temporary folder")
    except RemoteError:
        pass


def main(argv=None) -> int:
    """`python -m edgecnn.device.remote USER@HOST[:PORT] ... --model M --manifest F --npz D`: JSON rows."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgecnn.device.remote", description=main.__doc__)
    p.add_argument("hosts", nargs="+", metavar="USER@HOST[:PORT]")
    p.add_argument("--model", action="append", required=True, help=".tflite file (repeatable)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--npz", required=True, help="test subset (see write_npz)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per host")
    p.add_argument("--identity", "-i", help="private key file")
    p.add_argument("--python", help="the board's Python command (default: $EDGECNN_REMOTE_PYTHON or python3)")
    p.add_argument("-o", dest="ssh_options", action="append", default=[], help="OpenSSH option Key=Value")
    p.add_argument("--allow-modified", action="store_true", help="run models whose sha256 differs from the manifest")
    p.add_argument("--accept-new-host-keys", action="store_true", help="accept an unknown host key on first contact")
    p.add_argument("--kernels", choices=KERNELS, default="xnnpack",
                   help="the board's TFLite CPU kernels (reference: bit-exact with export's figures for them)")
    a = p.parse_args(argv)
    try:
        rows = [r for h in a.hosts for r in run_remote(
            h, a.model, a.manifest, a.npz, threads=a.threads, runs=a.runs, warmup=a.warmup, timeout=a.timeout,
            ssh_options=a.ssh_options, identity=a.identity, python=a.python, allow_modified=a.allow_modified,
            accept_new_host_keys=a.accept_new_host_keys, kernels=a.kernels)]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in rows:
        r.pop("probs", None)
        r.pop("predictions", None)
        print(json.dumps(r))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
