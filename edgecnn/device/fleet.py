"""A fleet of boards: a hosts file, and `run_remote` on every board at once with bounded parallelism.

    edgecnn bench runs/d --hosts hosts.txt --remote-jobs 4      # hosts.txt: USER@HOST[:PORT] [NAME] per line

Python::

    from edgecnn.device.fleet import read_hosts, run_fleet
    rows = run_fleet(read_hosts("hosts.txt"), ["model_int8.tflite"], "manifest.json", "data.npz", jobs=4)
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from edgecnn.device import remote
from edgecnn.device.remote import _row, parse_host
from edgecnn.errors import ConfigError

__all__ = ["read_hosts", "run_fleet"]


def read_hosts(path) -> list:
    """A fleet file: one `USER@HOST[:PORT] [NAME]` per line; blank lines and `#` comments are skipped.
    Returns the entries as "SPEC" or "SPEC NAME" strings, each checked with `parse_host`.

    Raises:
        ConfigError: an unreadable file or a malformed line (with its number).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the hosts file ({e.strerror or e})") from None
    out = []
    for i, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, name = line.partition(" ")
        try:
            parse_host(spec)
        except ConfigError as e:
            raise ConfigError(f"{path}:{i}: {e}") from None
        out.append(f"{spec} {name.strip()}".strip())
    if not out:
        raise ConfigError(f"{path}: no hosts (one USER@HOST[:PORT] [NAME] per line)")
    return out


def run_fleet(entries: Sequence[str], model_files: Sequence, manifest_path, npz_path, *, jobs: int = 4,
              **kwargs) -> list:
    """`remote.run_remote` on every host of `entries` ("SPEC" or "SPEC NAME"), at most `jobs` at a time; rows come back
    in host order. A host that fails, or drops mid-run, is its own failed row; the others finish.

    Raises:
        ConfigError: jobs < 1.
    """
    from concurrent.futures import ThreadPoolExecutor

    if jobs < 1:
        raise ConfigError(f"remote jobs must be >= 1 (got {jobs})")

    def one(entry: str) -> list:
        spec, _, name = entry.partition(" ")
        try:
            return remote.run_remote(spec, model_files, manifest_path, npz_path, name=name.strip() or None, **kwargs)
        except Exception as e:  # a malformed spec or a local error: this host's failed row only
            return [_row(artifact="*", device=spec, status="failed", reason=" ".join(str(e).split()) or
                         type(e).__name__, host=spec)]

    with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(entries)))) as pool:
        return [r for rows in pool.map(one, entries) for r in rows]
