"""Local OpenSSH servers on 127.0.0.1 for the remote tests and benchmarks/fleet_bench.py: key auth as the current
user, nothing reachable from outside this machine."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.path.exists(p)), None)
SFTP = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                         "/usr/libexec/sftp-server") if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def start_sshd(d: Path, user_key: Path, host_key: Path):
    """An sshd on 127.0.0.1:PORT as the current user, key auth from d/authorized_keys only: (process, port, log).

    Raises:
        RuntimeError: it did not start (with the end of its log).
    """
    port, user = free_port(), getpass.getuser()
    lines = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {d / 'sshd.pid'}",
             f"AuthorizedKeysFile {d / 'authorized_keys'}", "StrictModes no", "UsePAM no",
             "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
             f"AllowUsers {user}", "PermitRootLogin prohibit-password", "LogLevel ERROR"]
    if SFTP:
        lines.append(f"Subsystem sftp {SFTP}")
    shutil.copy(str(user_key) + ".pub", d / "authorized_keys")
    (d / "sshd_config").write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"sshd did not start: {(d / 'sshd.log').read_text().strip()[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, port, log


def stop(proc, log) -> None:
    proc.terminate()
    proc.wait(timeout=10)
    log.close()
