"""Distributed tuning on KerasTuner's own chief/worker engine, and a supervisor that keeps it alive.

KerasTuner's distributed mode is three environment variables: the chief (KERASTUNER_TUNER_ID=chief) serves
the oracle over gRPC at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT, and each worker (KERASTUNER_TUNER_ID=
worker<N>) asks it for a trial, trains it and reports back. `supervise` is the chief: it serves the search's
oracle with KerasTuner's own `OracleServicer` from the `edgecnn tune` process itself (which has TensorFlow
loaded already: a chief process of its own cost a third TensorFlow start-up on the same cores, 2.4 s on 2),
starts N local workers as processes of `python -m edgecnn.tune worker`, each with its own thread budget, and
watches them:

- a worker that dies (kill -9, out of memory) is started again under the same id; the oracle hands an id its
  unfinished trial back (`Oracle.create_trial` returns `ongoing_trials[tuner_id]`), so the trial is run again,
  not lost;
- the oracle saves its state in RUN/tuner/ after every trial: a chief that dies (the `edgecnn tune` process,
  killed) takes its local workers with it (they get SIGKILL when their parent dies) and the same command with
  --resume continues the search, each worker id getting back the trial it had;
- KerasTuner's own chief loop polls for its exit every 20 s and waits forever for a worker that never comes
  back: here the server stops as soon as the oracle has said the search is over and every local worker has
  ended; workers on other machines (`--chief`) get `CHIEF_GRACE_S` more to say goodbye.

The gRPC channel has no authentication: keep --chief on a trusted network (docs/distributed.md).
"""
from __future__ import annotations

import ctypes
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
    if not tid:
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


def _pdeathsig():
    """prctl(PR_SET_PDEATHSIG, SIGKILL) for a child before exec (Linux), resolved here in the parent so the child
    only makes the call; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # a killed chief leaves no worker behind waiting for its server


def _spawn(job: Path, env: dict, name: str) -> subprocess.Popen:
    """A worker process; its stderr goes to RUN/tuner/workers/<name>.log (appended across restarts)."""
    cmd = [sys.executable, "-m", "edgecnn.tune", "worker", str(job)]
    with open(_log(job, name), "a") as err:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                preexec_fn=_pdeathsig())


def serve_oracle(oracle, host: str, port: int):
    """KerasTuner's chief: its `OracleServicer` on a gRPC server at host:port, serving in background threads
    (what `oracle_chief.start_server` does, without its blocking 20 s exit poll). Returns (server, servicer)."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"tuning: cannot serve the oracle on {host}:{port} (in use, or not an address of this "
                          "machine)")
    server.start()
    return server, servicer


def _search_over(servicer, oracle) -> bool:
    """The oracle has said STOPPED to a worker and holds no trial and no worker any more."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    return servicer.stop_triggered and exit_chief(oracle)


def _tail(job: Path, name: str) -> str:
    try:
        text = _log(job, name).read_text(errors="replace")
    except OSError:
        text = ""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("W0000", "I0000", "E0000"))]
    return lines[-1][:300] if lines else "no error output"


def supervise(cfg, out: Path, oracle, say=print) -> dict:
    """Serve `oracle` (the search's, loaded from RUN/tuner/) and run `cfg.workers` local workers until the
    oracle says the search is over.

    Returns:
        {"workers": N, "threads_per_worker": t, "restarts": {id: n}, "address": "host:port"}.
    Raises:
        ConfigError: the address cannot be served; a worker died more than MAX_RESTARTS times (its last error
            line is in the message).
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
    client_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    env = {f"worker{i}": role_env(f"worker{i}", client_host, port, threads) for i in range(cfg.workers)}
    procs = {name: _spawn(job, e, name) for name, e in env.items()}  # they start while the server comes up
    restarts = {name: 0 for name in procs}
    server = None
    try:
        server, servicer = serve_oracle(oracle, host, port)
        say(f"tuning on KerasTuner's chief/worker engine: oracle at {host}:{port}, {cfg.workers} local worker(s) "
            f"of {threads} thread(s)", flush=True)
        stopped_at = None
        while True:
            time.sleep(0.3)
            for name, p in list(procs.items()):
                code = p.poll()
                if code is None or code == 0:
                    continue
                if servicer.stop_triggered and name not in oracle.ongoing_trials:
                    continue  # the search is over; a worker that failed on its way out loses nothing
                restarts[name] += 1
                if restarts[name] > MAX_RESTARTS:
                    raise ConfigError(f"tuning: {name} failed {restarts[name]} times; last: {_tail(job, name)} "
                                      f"(RUN/tuner/{MARKS}/{name}.log)")
                say(f"{name} ended ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)}); starting it "
                    "again: its unfinished trial is run again", flush=True)
                procs[name] = _spawn(job, env[name], name)
            if any(p.poll() is None for p in procs.values()):
                continue
            if _search_over(servicer, oracle) or (servicer.stop_triggered and not cfg.chief):
                break  # local workers end with 0 only once the oracle has said STOPPED
            if servicer.stop_triggered:  # workers elsewhere: give them a while to finish and say goodbye
                stopped_at = stopped_at or time.monotonic()
                if time.monotonic() - stopped_at > CHIEF_GRACE_S:
                    say(f"the search is over here; worker(s) {sorted(oracle.tuner_ids)} elsewhere have not said "
                        "goodbye: stopping the oracle (its state is saved)", flush=True)
                    break
            elif cfg.workers and not cfg.chief:
                raise ConfigError("tuning: every worker ended before the oracle said the search was over "
                                  f"(RUN/tuner/{MARKS}/*.log)")
    finally:
        if server is not None:
            server.stop(grace=1).wait()
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
