"""Distributed tuning on KerasTuner's own chief/worker engine, and a supervisor that keeps it alive.

KerasTuner's distributed mode is three environment variables: the chief (KERASTUNER_TUNER_ID=chief) serves
the oracle over gRPC at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT, and each worker (KERASTUNER_TUNER_ID=
worker<N>) asks it for a trial, trains it and reports back. `supervise` starts the chief and N local workers as
processes of `python -m edgecnn.tune`, each worker with its own thread budget, and watches them:

- a worker that dies (kill -9, out of memory) is started again under the same id; the oracle hands an id its
  unfinished trial back (`Oracle.create_trial` returns `ongoing_trials[tuner_id]`), so the trial is run again,
  not lost;
- a chief that dies is started again; it reloads its oracle from RUN/tuner/ and the workers, whose calls wait
  for the server (`wait_for_ready`), carry on;
- KerasTuner's chief polls for its own exit every 20 s, and can wait forever for a worker that never comes back
  (its exit check needs every worker to have said goodbye): once every local worker has ended normally (the
  oracle told it the search is over) the chief is stopped at once; with workers on other machines it gets
  `CHIEF_GRACE_S` after the local ones end. Its state is saved after every trial.

The gRPC channel has no authentication: keep --chief on a trusted network (docs/distributed.md).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edgecnn.errors import ConfigError

JOB = "tune_job.json"
MARKS = "workers"  # RUN/tuner/workers/<tuner id>.json: pid and the trial it runs (tests and the curious)
MAX_RESTARTS = 3  # per process; beyond that the search stops with an error
CHIEF_GRACE_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def role_env(tuner_id: str, host: str, port: int, threads: int = 0) -> dict:
    """The environment of a chief or worker process (a worker with `threads` > 0 uses that many)."""
    env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=str(port))
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=str(threads),
                   EDGECNN_THREADS=str(threads))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), *sys.path, env.get("PYTHONPATH", "")] if p)
    return env


def mark_trial(project_dir: str, trial_id: str) -> None:
    """Record which trial this process runs (RUN/tuner/workers/<id>.json); a no-op outside a distributed search."""
    tid = os.environ.get("KERASTUNER_TUNER_ID")
    if not tid or tid == "chief":
        return
    d = Path(project_dir) / MARKS
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{tid}.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), "trial_id": trial_id, "started": time.time()}))
    os.replace(tmp, d / f"{tid}.json")


def _log(job: Path, name: str) -> Path:
    d = job.parent / "tuner" / MARKS
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.log"


def _spawn(role: str, job: Path, env: dict, name: str) -> subprocess.Popen:
    """A chief or worker process; its stderr goes to RUN/tuner/workers/<name>.log (appended across restarts)."""
    cmd = [sys.executable, "-m", "edgecnn.tune", role, str(job)]
    with open(_log(job, name), "a") as err:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=err, start_new_session=True)


def _tail(job: Path, name: str) -> str:
    try:
        text = _log(job, name).read_text(errors="replace")
    except OSError:
        text = ""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("W0000", "I0000", "E0000"))]
    return lines[-1][:300] if lines else "no error output"


def supervise(cfg, out: Path, say=print) -> dict:
    """Run the search as a chief and `cfg.workers` local workers until the oracle says it is done.

    Returns:
        {"workers": N, "threads_per_worker": t, "restarts": {id: n}, "address": "host:port"}.
    Raises:
        ConfigError: a process died more than MAX_RESTARTS times (its last error line is in the message).
    """
    job = out / JOB
    job.write_text(json.dumps(cfg.to_dict(), default=str))
    if cfg.chief:
        host, _, port = cfg.chief.rpartition(":")
        port = int(port)
    else:
        host, port = "127.0.0.1", free_port()
    cores = os.cpu_count() or 1
    threads = cfg.worker_threads or max(1, cores // max(1, cfg.workers))
    procs = {"chief": _spawn("chief", job, role_env("chief", host, port), "chief")}
    client_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    for i in range(cfg.workers):
        procs[f"worker{i}"] = _spawn("worker", job, role_env(f"worker{i}", client_host, port, threads), f"worker{i}")
    restarts = {name: 0 for name in procs}
    say(f"tuning on KerasTuner's chief/worker engine: oracle at {host}:{port}, {cfg.workers} local worker(s) of "
        f"{threads} thread(s)", flush=True)
    chief_done_at = workers_done_at = None
    try:
        while True:
            time.sleep(0.3)
            chief = procs["chief"]
            for name, p in list(procs.items()):
                code = p.poll()
                if code is None or code == 0:
                    continue
                if name != "chief" and chief.poll() == 0:
                    continue  # the search is over; a worker that failed on its way out loses nothing
                restarts[name] += 1
                if restarts[name] > MAX_RESTARTS:
                    raise ConfigError(f"tuning: {name} failed {restarts[name]} times; last: {_tail(job, name)} "
                                      f"(RUN/tuner/{MARKS}/{name}.log)")
                say(f"{name} ended ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)}); starting it "
                    "again: its unfinished trial is run again", flush=True)
                env = role_env(name, host if name == "chief" else client_host, port, 0 if name == "chief" else threads)
                procs[name] = _spawn("chief" if name == "chief" else "worker", job, env, name)
            workers_alive = [n for n, p in procs.items() if n != "chief" and p.poll() is None]
            if procs["chief"].poll() == 0:
                chief_done_at = chief_done_at or time.monotonic()
                if not workers_alive or time.monotonic() - chief_done_at > CHIEF_GRACE_S:
                    break
            elif cfg.workers and not workers_alive and not cfg.chief:
                # local workers end with 0 only when the oracle has said STOPPED: the search is over, and the
                # chief, which checks for its own exit every 20 s, is stopped now (it saved after every trial)
                break
            elif cfg.workers and not workers_alive:
                workers_done_at = workers_done_at or time.monotonic()
                if time.monotonic() - workers_done_at > CHIEF_GRACE_S:  # a chief waiting for a worker long gone
                    say("every worker has ended and the chief is still waiting: stopping it (its state is saved)",
                        flush=True)
                    break
    finally:
        for p in procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    return {"workers": cfg.workers, "threads_per_worker": threads, "restarts": restarts,
            "address": f"{host}:{port}"}


def set_threads() -> None:
    """A worker's thread budget (EDGECNN_THREADS), before TensorFlow runs anything."""
    threads = int(os.environ.get("EDGECNN_THREADS", "0") or 0)
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already running: TF_NUM_INTRAOP_THREADS in the environment set it
            pass
