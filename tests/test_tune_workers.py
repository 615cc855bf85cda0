"""Distributed tuning (issue 14) on KerasTuner's chief/worker engine: two local workers share the trials,
trials.json names the worker of each, and `kill -9` of a worker in the middle of a trial loses no trial."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgecnn.errors import ConfigError


@pytest.mark.slow  # 38 s: a chief and three worker processes, each importing TensorFlow
def test_a_killed_worker_loses_no_trial(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgecnn", "tune", "--out", str(run), "--max-trials", "4", "--trial-epochs", "3",
           "--workers", "2", "--worker-threads", "1", "--epochs", "1", "-v"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    mark = run / "tuner" / "workers" / "worker1.json"
    deadline = time.monotonic() + 120
    while not mark.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert mark.exists(), "worker1 never started a trial"
    time.sleep(1.0)  # inside the trial: the model is built and training
    victim = json.loads(mark.read_text())
    os.kill(victim["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "worker1 ended (signal 9)" in out
    record = json.loads((run / "trials.json").read_text())
    trials = record["trials"]
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" and t["score"] is not None for t in trials), trials
    assert {t["worker"] for t in trials} == {"worker0", "worker1"}
    assert victim["trial_id"] in {t["trial_id"] for t in trials if t["worker"] == "worker1"}  # re-run, not lost
    assert record["workers"]["restarts"]["worker1"] == 1 and record["workers"]["threads_per_worker"] == 1
    assert all(t["seconds"] and t["seconds"] > 0 for t in trials)
    assert (run / "model.keras").is_file()  # the best trial retrained in full


@pytest.mark.parametrize("kw, words", [
    ({"workers": -1}, "--workers"),
    ({"chief": "nohost"}, "HOST:PORT"),
    ({"worker_of": "host:99999"}, "HOST:PORT"),
    ({"chief": "0.0.0.0:8000", "worker_of": "h:8000"}, "contradict"),
])
def test_bad_distribution_options_are_one_line(kw, words):
    from edgecnn.tune import TuneConfig

    with pytest.raises(ConfigError, match=words):
        TuneConfig(**kw)


def test_tune_config_round_trips_through_the_job_file():
    from edgecnn.train import TrainConfig
    from edgecnn.tune import TuneConfig

    cfg = TuneConfig(train=TrainConfig(out="x", epochs=5), max_trials=3, workers=2, worker_threads=1)
    assert TuneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.slow
def test_a_killed_chief_leaves_no_worker_and_resumes(tmp_path):
    """The chief is the `edgecnn tune` process: kill -9 it mid-search, its workers die with it, and --resume
    finishes the search with the trials that were running then."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgecnn", "tune", "--out", str(run), "--max-trials", "4", "--trial-epochs", "3",
           "--workers", "2", "--worker-threads", "1", "--epochs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marks = [run / "tuner" / "workers" / f"worker{i}.json" for i in (0, 1)]
    deadline = time.monotonic() + 120
    while not all(m.exists() for m in marks) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert all(m.exists() for m in marks), "the workers never started a trial"
    running = {json.loads(m.read_text())["trial_id"] for m in marks}
    pids = [json.loads(m.read_text())["pid"] for m in marks]
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2] for p in pids) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")
                and "Z" not in open(f"/proc/{p}/stat").read().split()[2]], "a worker outlived its chief"
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    trials = json.loads((run / "trials.json").read_text())["trials"]
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials), trials
    assert running <= {t["trial_id"] for t in trials}
