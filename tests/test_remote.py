"""Remote benchmarking for real: an OpenSSH server started on 127.0.0.1 by the test, the system ssh/scp client,
and the on-device script run by a Python in which TensorFlow cannot be imported (as on a board)."""
from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _device_helpers import BLOCKER, device_export, litert_probs
from _sshd import SSHD, free_port as _free_port, keygen as _keygen, start_sshd, stop as _stop
from edgecnn.script.edgecnn_infer import LATENCY_KEYS
from edgecnn.device.remote import ROW_KEYS, Host, main, parse_host, run_remote
from edgecnn.errors import ConfigError

needs_sshd = pytest.mark.skipif(not SSHD or not shutil.which("ssh") or not shutil.which("scp"),
                                reason="needs OpenSSH (apt-get install openssh-server openssh-client)")


@pytest.fixture(scope="session")
def export(digits_run, tmp_path_factory):
    return device_export(digits_run, tmp_path_factory)


def _start_sshd(d: Path, user_key: Path, host_key: Path):
    try:
        return start_sshd(d, user_key, host_key)
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd on 127.0.0.1:PORT as the current user: key auth from a tmp authorized_keys file only."""
    if not SSHD:
        pytest.skip("sshd not installed (apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    host_key, user_key, other_key = _keygen(d / "host_key"), _keygen(d / "user_key"), _keygen(d / "other_key")
    proc, port, log = _start_sshd(d, user_key, host_key)
    try:
        opts = [f"UserKnownHostsFile={d / 'known_hosts'}", "StrictHostKeyChecking=accept-new"]
        yield {"host": f"{getpass.getuser()}@127.0.0.1:{port}", "key": str(user_key), "other_key": str(other_key),
               "opts": opts, "dir": d}
    finally:
        _stop(proc, log)


@pytest.fixture(scope="module")
def fleet(sshd, tmp_path_factory):
    """Three sshd instances on three 127.0.0.1 ports (the first is `sshd`), one user key."""
    started = []
    try:
        hosts = [sshd["host"]]
        for i in range(2):
            d = tmp_path_factory.mktemp(f"sshd{i + 2}")
            started.append(_start_sshd(d, Path(sshd["key"]), _keygen(d / "host_key")))
            hosts.append(f"{getpass.getuser()}@127.0.0.1:{started[-1][1]}")
        yield dict(sshd, hosts=hosts)
    finally:
        for proc, _, log in started:
            _stop(proc, log)


def _board_python(d: Path, *blocked: str) -> str:
    """A 'board Python' command: this Python with `blocked` packages failing to import."""
    site = d / ("blocker-" + "-".join(blocked))
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    return f"env PYTHONPATH={site} EDGECNN_BLOCK_IMPORTS={','.join(blocked)} {sys.executable}"


@needs_sshd
def test_remote_rows_match_local_bench_without_tensorflow(sshd, export):
    before = set(glob.glob("/tmp/edgecnn.*"))
    rows = run_remote(sshd["host"], [export["fp32"], export["int8"]], export["manifest"], export["pre_npz"],
                      threads=1, runs=5, warmup=1, timeout=120, ssh_options=sshd["opts"], identity=sshd["key"],
                      python=_board_python(sshd["dir"], "tensorflow", "edgecnn"))
    assert [r["artifact"] for r in rows] == ["tflite_fp32", "tflite_int8"], rows
    for row, model in zip(rows, (export["fp32"], export["int8"])):
        assert row["status"] == "ok", row["reason"]
        assert set(ROW_KEYS) <= set(row)
        assert row["device"].endswith(f"({sshd['host']})") and row["host"] == sshd["host"]
        assert row["runtime"].startswith("ai_edge_litert ")
        assert set(row["latency"]) == set(LATENCY_KEYS) and row["latency"]["runs"] == 5
        assert row["cpu_count"] == os.cpu_count() and row["n"] == len(export["y"])
        direct = litert_probs(model, export["x"])
        assert row["predictions"] == direct.argmax(1).tolist()
        np.testing.assert_allclose(np.asarray(row["probs"]), direct, atol=1e-6)
        assert row["accuracy"] == pytest.approx(export["bench"][row["artifact"]].accuracy, abs=1e-12)  # local row
    assert rows[1]["precision"] == "int8" and rows[1]["accuracy"] > 0.9
    assert rows[1]["accelerator"] == "xnnpack" and rows[1]["manifest_predictions"] == "same"
    assert set(glob.glob("/tmp/edgecnn.*")) <= before  # the board's temporary folder is gone


@needs_sshd
def test_a_board_runs_the_kernels_asked_for(sshd, export):
    for kernels in ("reference", "builtin"):
        rows = run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], runs=2, warmup=1,
                          timeout=120, ssh_options=sshd["opts"], identity=sshd["key"], kernels=kernels,
                          python=_board_python(sshd["dir"], "tensorflow", "edgecnn"))
        assert rows[0]["status"] == "ok", rows[0]["reason"]
        assert rows[0]["accelerator"] == kernels and rows[0]["manifest_predictions"] == "same"
    with pytest.raises(ConfigError, match="unknown kernels"):
        run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], kernels="gpu")


@needs_sshd
def test_unreachable_port_is_one_failed_row_and_other_hosts_go_on(sshd, export, capsys):
    dead = f"{getpass.getuser()}@127.0.0.1:{_free_port()}"
    argv = [dead, sshd["host"], "--model", str(export["int8"]), "--manifest", str(export["manifest"]),
            "--npz", str(export["pre_npz"]), "--runs", "2", "--warmup", "0", "-i", sshd["key"],
            "--python", _board_python(sshd["dir"], "tensorflow")]
    for o in sshd["opts"]:
        argv += ["-o", o]
    assert main(argv) == 1  # not every row ok
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[0]["device"] == dead and rows[0]["artifact"] == "*"
    assert "cannot reach" in rows[0]["reason"] and "systemctl enable --now ssh" in rows[0]["reason"]


@needs_sshd
def test_refused_key_says_how_to_install_it(sshd, export):
    rows = run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], timeout=60,
                      ssh_options=sshd["opts"] + ["IdentitiesOnly=yes", "IdentityAgent=none"],
                      identity=sshd["other_key"])
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "authentication failed" in rows[0]["reason"] and "ssh-copy-id" in rows[0]["reason"]


@needs_sshd
@pytest.mark.parametrize("case", ["no_python", "no_runtime", "timeout"])
def test_board_problems_are_failed_rows_with_a_fix(sshd, export, case):
    d = sshd["dir"]
    python, timeout = {
        "no_python": ("/nonexistent/bin/python3", 60),
        "no_runtime": (_board_python(d, "tensorflow", "ai_edge_litert", "tflite_runtime"), 60),
        "timeout": (str(d / "slow_python"), 4),
    }[case]
    (d / "slow_python").write_text(f"#!/bin/sh\nsleep 30\nexec {sys.executable} \"$@\"\n")
    (d / "slow_python").chmod(0o755)
    t0 = time.monotonic()
    rows = run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], timeout=timeout,
                      ssh_options=sshd["opts"], identity=sshd["key"], python=python)
    assert len(rows) == 1 and rows[0]["status"] == "failed", rows
    want = {"no_python": "sudo apt install python3", "no_runtime": "pip install ai-edge-litert",
            "timeout": "timed out after 4 s"}[case]
    assert want in rows[0]["reason"]
    assert time.monotonic() - t0 < timeout + 20


def test_parse_host():
    assert parse_host("pi@raspberrypi.local:2222") == Host("raspberrypi.local", "pi", 2222)
    assert parse_host("board") == Host("board")
    assert parse_host("me@[::1]:22") == Host("::1", "me", 22)
    assert str(parse_host("me@[::1]:22")) == "me@[::1]:22"
    for bad in ("pi@", "pi@host:port", "pi@host:70000"):
        with pytest.raises(ConfigError):
            parse_host(bad)


def test_missing_local_file_is_a_config_error(tmp_path, export):
    with pytest.raises(ConfigError, match="no such file"):
        run_remote("pi@board", [tmp_path / "nope.tflite"], export["manifest"], export["pre_npz"])


# ---------------------------------------------------------------------------------------- integrity (issue 10)


def test_hosts_that_would_reach_ssh_as_options_are_refused():
    for bad in ("-oProxyCommand=touch${IFS}/tmp/x", "pi@-oProxyCommand=x", "-v@board", "pi@host;rm", "pi@ho st"):
        with pytest.raises(ConfigError):
            parse_host(bad)


def test_every_word_of_the_board_python_is_quoted():
    from edgecnn.device.remote import shell_words

    assert shell_words("~/venv/bin/python -s") == "\"$HOME\"/venv/bin/python -s"
    assert shell_words("~/x;touch${IFS}/tmp/p;#") == "\"$HOME\"'/x;touch${IFS}/tmp/p;#'"
    with pytest.raises(ConfigError):
        shell_words("~root/python")


@needs_sshd
def test_a_python_word_never_runs_a_command_on_the_board(sshd, export, tmp_path):
    marker = tmp_path / "pwned"
    for python in (f"~/x;touch${{IFS}}{marker};#", f"python3;touch {marker}", f"$(touch {marker})",
                   f"`touch {marker}`"):
        rows = run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], timeout=60,
                          ssh_options=sshd["opts"], identity=sshd["key"], python=python)
        assert rows[0]["status"] == "failed", python
        assert not marker.exists(), python


@needs_sshd
def test_an_unknown_host_key_is_refused_with_the_fix(sshd, export, tmp_path):
    fresh = [f"UserKnownHostsFile={tmp_path / 'empty_known_hosts'}"]
    rows = run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], timeout=60,
                      ssh_options=fresh, identity=sshd["key"], python=_board_python(sshd["dir"], "tensorflow"))
    assert rows[0]["status"] == "failed" and "ssh-keyscan -p" in rows[0]["reason"], rows[0]["reason"]
    assert "--accept-new-host-keys" in rows[0]["reason"]
    rows = run_remote(sshd["host"], [export["int8"]], export["manifest"], export["pre_npz"], timeout=60, runs=2,
                      ssh_options=fresh, identity=sshd["key"], python=_board_python(sshd["dir"], "tensorflow"),
                      accept_new_host_keys=True)
    assert rows[0]["status"] == "ok", rows[0]["reason"]
    assert "--accept-new-host-keys" in rows[0]["note"]


@needs_sshd
def test_a_modified_model_is_refused_on_the_board(sshd, export, tmp_path):
    model = tmp_path / export["int8"].name
    data = bytearray(export["int8"].read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights: the interpreter would not notice
    model.write_bytes(bytes(data))
    kw = dict(timeout=60, runs=2, ssh_options=sshd["opts"], identity=sshd["key"],
              python=_board_python(sshd["dir"], "tensorflow"))
    rows = run_remote(sshd["host"], [model], export["manifest"], export["pre_npz"], **kw)
    assert rows[0]["status"] == "failed" and "sha256" in rows[0]["reason"] and "--allow-modified" in rows[0]["reason"]
    rows = run_remote(sshd["host"], [model], export["manifest"], export["pre_npz"], allow_modified=True, **kw)
    assert rows[0]["status"] == "ok" and rows[0]["integrity"] == "modified (allowed)", rows[0]["reason"]


# ------------------------------------------------------------------------------------------------- fleet (issue 14)


def test_read_hosts(tmp_path):
    from edgecnn.device.fleet import read_hosts

    f = tmp_path / "hosts"
    f.write_text("# the lab\npi@pi4.local pi4-kitchen\n\nroot@[::1]:2222   # a comment\n")
    assert read_hosts(f) == ["pi@pi4.local pi4-kitchen", "root@[::1]:2222"]
    f.write_text("pi@good\n-oProxyCommand=x\n")
    with pytest.raises(ConfigError, match=":2:"):
        read_hosts(f)


@needs_sshd
def test_a_fleet_is_benched_concurrently_and_a_dead_host_does_not_stop_the_others(fleet, export):
    from edgecnn.device.fleet import run_fleet

    d = fleet["dir"]
    (d / "slow3").write_text(f"#!/bin/sh\nsleep 3\nexec {sys.executable} \"$@\"\n")  # a board that takes 3 s
    (d / "slow3").chmod(0o755)
    dead = f"{getpass.getuser()}@127.0.0.1:{_free_port()}"
    entries = [f"{h} board{i}" for i, h in enumerate(fleet["hosts"])] + [dead]
    t0 = time.monotonic()
    rows = run_fleet(entries, [export["int8"]], export["manifest"], export["pre_npz"], jobs=4, timeout=60, runs=2,
                     ssh_options=fleet["opts"], identity=fleet["key"], python=str(d / "slow3"))
    wall = time.monotonic() - t0
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"], [r.get("reason") for r in rows]
    assert [r["device"].split(" (")[0] for r in rows[:3]] == ["board0", "board1", "board2"]
    assert "cannot reach" in rows[3]["reason"]
    # each board sleeps 3 s before running (twice: preflight and the model): one after another would be >= 18 s
    assert wall < 14, wall


@needs_sshd
def test_tuning_measures_a_trial_on_a_board(sshd, monkeypatch):
    """`tune --measure-on USER@HOST`: the trial's int8 model goes to the board with a manifest vouching for it,
    and the latency comes back from the on-device script."""
    import keras

    from edgecnn.data import DataConfig, load_dataset
    from edgecnn.models import ModelSpec, build
    from edgecnn.tune_device import DeviceBudget, measure

    monkeypatch.setenv("EDGECNN_REMOTE_PYTHON", sys.executable)
    ds = load_dataset(DataConfig())
    keras.utils.set_random_seed(0)
    model = build(ModelSpec("simple_cnn", (8, 8, 1), 10, {"filters": 8}))
    budget = DeviceBudget(max_latency_ms=100, measure_on=sshd["host"], ssh_options=tuple(sshd["opts"]),
                          identity=sshd["key"])
    figures = measure(model, {"calib": ds.x_train[:50], "preprocessing": ds.preprocessing,
                              "class_names": ds.class_names}, budget)
    assert figures.get("note") is None, figures
    assert figures["int8_latency_ms"] > 0 and figures["int8_size_bytes"] > 1000 and "127.0.0.1" in figures["device"]
    assert budget.violations(figures) == []


def test_a_board_row_is_checked_against_the_manifest_figures_for_its_kernels(export, tmp_path):
    """A board's XNNPACK (or builtin) kernels may round int8 otherwise than export's: its row says when its
    figures are not the manifest's for those kernels. The board's answer here is the on-device script's JSON."""
    import dataclasses
    import json

    from _device_helpers import run_script
    from edgecnn.bench.remote import _adapt
    from edgecnn.bench.sources import Artifact
    from edgecnn.contracts.manifest import read_manifest
    from edgecnn.rundir import open_run

    manifest = read_manifest(export["manifest"])
    ref = open_run(export["run"]).load_dataset().test.predict_with(open_run(export["run"]).load_model())
    for flag, kernels in (((), "xnnpack"), (("--no-xnnpack",), "builtin")):
        p = run_script("--model", export["int8"], "--npz", export["pre_npz"], "--json", "--probs", *flag)
        assert p.returncode == 0, p.stderr
        board = json.loads(p.stdout)
        entry = manifest.artifacts["tflite_int8"]
        art = Artifact("tflite_int8", export["int8"], "tflite", "int8", entry)
        row = _adapt(board, {export["int8"].name: art}, ref, None, export["y"])
        assert row.status == "ok" and row.accelerator == kernels and "manifest" not in (row.note or "")
        # the same answer against a manifest that recorded other figures for these kernels
        d = entry.to_dict()
        (d["parity"] if kernels == "xnnpack" else d["parity_kernels"][kernels])["top1_agreement"] = 0.5
        art = dataclasses.replace(art, entry=type(entry).from_dict("tflite_int8", d))
        row = _adapt(board, {export["int8"].name: art}, ref, None, export["y"])
        assert f"differs from the manifest's figures for the {kernels} kernels" in row.note
