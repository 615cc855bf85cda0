"""What users look at (issue 13): report.html in a real browser, tables that fit the terminal, verdicts,
plots that read right, one CLI dialect."""
from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

import _browser
from bench_artifacts import copy_run, exported_run
from edgecnn.bench import BenchConfig, bench

needs_chromium = pytest.mark.skipif(_browser.CHROMIUM is None, reason="Chromium not installed (apt-get install "
                                                                      "chromium; .ci/run installs it)")
QUICK = ["--runs", "3", "--min-time", "0", "--warmup-time", "0", "--max-time", "1"]


@pytest.fixture(scope="module")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def benched(exported, tmp_path_factory):
    run = copy_run(exported, tmp_path_factory.mktemp("benched") / "run")
    res = cli("bench", run, "--backends", "keras,tflite,onnxruntime,tflm,ethos-u", *QUICK, "--max-acc-drop", "1")
    assert res.exit_code == 0, res.output
    return run


def cli(*args, env=None):
    from edgecnn.cli import main

    return CliRunner(env=env).invoke(main, [str(a) for a in args])


@needs_chromium
def test_report_renders_in_a_browser_with_every_image(benched):
    page = benched / "report.html"
    assert page.is_file()  # bench refreshed it
    html = page.read_text()
    for section in ("Data and model", "Training", "Classification report", "Export", "Quantization recipe", "Bench",
                    "Manifest", "latency.png", "parity gates passed"):
        assert section in html, section
    assert "http://" not in html and "https://" not in html  # self-contained: no network
    seen = _browser.load(page)
    assert seen["images"] >= 5 and seen["broken"] == 0 and seen["errors"] == 0 and not seen["console"], seen
    # every table fits a 1300-pixel window: the notes naming libraries and paths break inside words
    assert seen["overflow"] == 0, seen


@needs_chromium
def test_board_rows_fit_the_page_beside_the_local_ones(benched, tmp_path):
    """Rows measured on a board (bench --remote) get their own table, one column wider: it fits a 1300-pixel
    window too, the board's description wrapping rather than pushing the notes behind a scrollbar. A row where
    a class's recall falls says which first in its notes."""
    run = shutil.copytree(benched, tmp_path / "run")  # with its bench results, which copy_run leaves out
    doc = json.loads((run / "bench" / "bench.json").read_text())
    board = "pi@raspberrypi.local (Raspberry Pi 5 Model B Rev 1.0, aarch64, Debian 12)"
    doc["rows"] += [dict(r, device=board) for r in doc["rows"] if r["backend"] == "tflite"]
    doc["rows"][-1].update(class_drop=22.222222, worst_class={"name": "seven", "lost": 2, "images": 9})
    (run / "bench" / "bench.json").write_text(json.dumps(doc))
    assert cli("report", run).exit_code == 0
    page = run / "report.html"
    assert "Devices and boards" in page.read_text() and "raspberrypi.local" in page.read_text()
    assert "worst class (pts): seven -22.22 (2/9)" in page.read_text().replace("<wbr>", "")
    seen = _browser.load(page)
    assert seen["overflow"] == 0 and seen["errors"] == 0, seen


def test_a_runtime_that_skips_every_artifact_says_why_once(benched, tmp_path):
    """A runtime that is not installed or has no hardware skips each artifact for the same reason: the terminal
    footnotes (which bench.md prints too) and the page say it once, naming the artifacts, and the page's bench
    table holds the rows that ran; failed rows keep a line each."""
    from types import SimpleNamespace

    from edgecnn.bench.report import footnotes
    from edgecnn.contracts.rows import Row

    why = "no GPU: LiteRT's GPU accelerator could not start (WebGPU: no adapter; Vulkan: no loader)"
    extra = [Row(artifact=a, backend="litert-gpu", status="skipped", reason=why)
             for a in ("tflite_fp32", "tflite_int8")]
    extra += [Row(artifact="tflite_fp32", backend="ethos-u", status="skipped", reason="not int8: 0 ops on the NPU"),
              Row(artifact="onnx_int8", backend="openvino", status="failed", reason="boom"),
              Row(artifact="tflite_int8", backend="litert-gpu", status="skipped", reason=why, device="pi@board")]
    lines = footnotes(SimpleNamespace(rows=extra, settings={}))
    assert lines[:4] == ["failed: onnx_int8 on openvino: boom",
                         f"skipped: tflite_fp32, tflite_int8 on litert-gpu: {why}",
                         "skipped: tflite_fp32 on ethos-u: not int8: 0 ops on the NPU",
                         f"skipped: tflite_int8 on litert-gpu @pi@board: {why}"]

    run = shutil.copytree(benched, tmp_path / "run")
    doc = json.loads((run / "bench" / "bench.json").read_text())
    ran = [r for r in doc["rows"] if r["status"] != "skipped"]
    doc["rows"] = ran + [r.to_dict() for r in extra[:4]]
    (run / "bench" / "bench.json").write_text(json.dumps(doc))
    assert cli("report", run).exit_code == 0
    page = (run / "report.html").read_text()
    bench_html = page[page.index("<h2>Bench</h2>"):]
    assert bench_html.count("WebGPU: no adapter") == 1 and "tflite_fp32, tflite_int8" in bench_html
    assert bench_html.count('<tr class="skipped">') == 2 and "Skipped: 3 row(s)" in bench_html  # two reasons
    assert bench_html.count('<tr class="failed">') == 1 and bench_html.count('<tr class="ok">') == len(ran)


def test_the_page_shows_latencies_and_long_names_as_people_read_them(benched):
    """Latencies carry the unit the terminal table gives them (5.58 us, not 0.005578 in a "ms" column), and a
    long name in a note (Vela's "Ethos_U55_High_End_Embedded") breaks after an underscore, never mid-word."""
    from edgecnn.contracts.rows import ms
    from edgecnn.report import _wrappable

    page = (benched / "report.html").read_text()
    bench_html = page[page.index("<h2>Bench</h2>"):]
    timed = [r for r in json.loads((benched / "bench" / "bench.json").read_text())["rows"] if r.get("latency")]
    assert timed
    for r in timed:
        median, p90 = ms(r["latency"]["median_ms"]), ms(r["latency"]["p90_ms"])
        assert re.search(rf"<td class=n>{re.escape(median)}</td><td class=n>{re.escape(p90)}</td>", bench_html), r
    assert "<th>median</th><th>p90</th>" in bench_html and "median ms" not in bench_html
    assert _wrappable("estimates for Ethos_U55_High_End_Embedded, Shared_Sram (Arm/vela.ini) <x>") == (
        "estimates for Ethos_<wbr>U55_<wbr>High_<wbr>End_<wbr>Embedded, Shared_Sram (Arm/vela.ini) &lt;x&gt;")
    rows = json.loads((benched / "bench" / "bench.json").read_text())["rows"]
    vela = [r for r in rows if r["backend"] == "ethos-u" and "Ethos_U55_High_End_Embedded" in (r.get("note") or "")]
    assert vela  # the ethos-u row of the int8 model (vela is a test dependency)
    assert "Ethos_<wbr>U55_<wbr>High_<wbr>End_<wbr>Embedded" in bench_html and "Ethos_U55_High_End" not in bench_html


def test_report_command_writes_the_page(exported, tmp_path):
    run = copy_run(exported, tmp_path / "run")
    (run / "report.html").unlink(missing_ok=True)
    res = cli("report", run)
    assert res.exit_code == 0 and (run / "report.html").is_file()
    assert "not benched yet" in (run / "report.html").read_text()
    res = cli("report", tmp_path)
    assert res.exit_code == 2 and "not a run directory" in res.output


def test_bench_table_fits_100_columns_one_line_a_row(benched):
    res = cli("bench", benched, "--backends", "keras,tflite,litert-cpu,litert-gpu,onnxruntime,tflm,ethos-u,openvino",
              *QUICK, "--out", benched / "b100", env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(ln) for ln in lines) <= 100, max(lines, key=len)
    rows = json.loads((benched / "b100" / "bench.json").read_text())["rows"]
    table = [ln for ln in lines if ln.startswith("│")]
    assert len(table) == len(rows)  # one line per row: no cell wrapped
    header = next(ln for ln in lines if ln.startswith("┃"))
    for col in ("artifact", "backend", "status", "acc", "drop", "agree", "size", "median"):
        assert col in header, col
    assert re.search(r"\d+(\.\d+)? us", res.output)  # microseconds below 1 ms, not 0.0044 ms
    wide = cli("bench", benched, "--backends", "tflite", *QUICK, "--wide", "--out", benched / "bw")
    assert "p90" in wide.output and "thru/s" in wide.output and "accel" in wide.output
    quick = cli("bench", benched, "--backends", "tflite", "--no-timing", "--out", benched / "bn")
    assert "median" not in next(ln for ln in quick.output.splitlines() if ln.startswith("┃"))


def test_verdicts_pass_and_fail_lines_and_structured_violations(benched, tmp_path):
    ok = cli("bench", benched, "--backends", "tflite", "--no-timing", "--max-acc-drop", "1", "--out", tmp_path / "a")
    assert ok.exit_code == 0 and "parity gates passed:" in ok.output and "--max-acc-drop 1" in ok.output
    bad = cli("bench", benched, "--backends", "tflite", "--no-timing", "--min-agreement", "1.0",
              "--max-abs-diff", "0", "--out", tmp_path / "b")
    assert bad.exit_code == 1 and "parity gate failed:" in bad.output
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    v = doc["violations_detail"][0]
    assert set(v) == {"subject", "metric", "value", "limit", "flag", "message"} and v["flag"] == "--max-abs-diff"
    # export judges the same gates, in the same words, and says when they pass
    exp = cli("export", copy_run(benched, tmp_path / "run"), "--formats", "tflite_int8", "--max-acc-drop", "1")
    assert exp.exit_code == 0 and "parity gates passed:" in exp.output
    # one meaning for a gate flag: a broken gate fails export as it fails bench (without --strict it still writes)
    broke = cli("export", copy_run(benched, tmp_path / "run2"), "--formats", "tflite_int8", "--max-abs-diff", "0")
    assert broke.exit_code == 1 and "parity gate failed: tflite_int8: max abs probability difference" in broke.output


def test_thin_evidence_is_flagged_before_the_verdict(benched, tmp_path):
    res = cli("bench", benched, "--backends", "tflite", "--no-timing", "--limit", "24", "--max-acc-drop", "1",
              "--out", tmp_path / "t")
    out = res.output
    assert "one test error moves accuracy by 4.17 points on 24 test images" in out
    assert out.index("one test error") < out.index("parity gate")


def test_a_warning_is_never_overtaken_by_the_line_printed_after_it():
    """The CLI filters native log lines out of stderr through a pipe read by a thread, so a line on stdout could
    pass a warning printed before it ("parity gates passed" above the warning that qualifies it): with stdout and
    stderr in one pipe, 20 warnings printed raw came out of order; `warn` waits until its line has passed."""
    import subprocess
    import sys

    code = ("import sys, click\nfrom edgecnn.cli.common import _filter_stderr, warn\n_filter_stderr()\n"
            "for i in range(20):\n"
            "    warn(f'w{i}') if sys.argv[1] == 'warn' else click.echo(f'warning: w{i}', err=True)\n"
            "    click.echo(f'o{i}')\n")
    expected = [ln for i in range(20) for ln in (f"warning: w{i}", f"o{i}")]
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTEST_CURRENT_TEST"}
    p = subprocess.run([sys.executable, "-c", code, "warn"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60, env=env)
    assert p.returncode == 0 and p.stdout.splitlines() == expected, p.stdout


def test_a_broken_gate_says_how_many_images_it_is():
    from edgecnn.contracts.gates import Gates, wilson_interval

    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)  # the textbook case
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == 1
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + 1.96 ** 2))  # all agree: n / (n + z^2)
    drop, agree = Gates(max_acc_drop=0.3, min_agreement=0.985).check(
        "tflite_int8", accuracy_drop=1.114206, agreement=351 / 359, accuracy=0.9053, n=359)
    assert str(drop).endswith("> --max-acc-drop 0.3 (+4 errors against the reference on 359 images; accuracy 0.9053)")
    # issue 12's MobileNetV2: 8 flips of 359 miss 0.985, yet the interval holds the target
    assert str(agree).endswith("< --min-agreement 0.985 (8 of 359 top-1 predictions differ; 95% interval "
                               "0.9566-0.9887)")
    assert "images" not in str(Gates(min_agreement=0.99).check("x", agreement=0.9)[0])  # no n: no count


def test_plots_read_right(benched, digits_run):
    from edgecnn.reporting import best_epoch
    from edgecnn.io import read_json

    history = read_json(digits_run / "history.json")
    assert best_epoch(history) == int(min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)) + 1
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from edgecnn import reporting

    captured = {}
    real = reporting._save
    reporting._save = lambda fig, path: captured.setdefault(path.name, fig)  # inspect the figure, do not write
    try:
        reporting.plot_curves(history, digits_run / "c.png")
        import numpy as np

        reporting.plot_confusion(np.eye(2, dtype=int), ["a", "b"], digits_run / "m.png", ylabel="Keras reference "
                                 "prediction", xlabel="tflite_int8 prediction")
    finally:
        reporting._save = real
    axes = captured["c.png"].axes
    assert [a.get_ylabel() for a in axes][0].startswith("accuracy") and axes[1].get_ylabel().startswith("loss")
    assert any("best epoch" in t.get_text() for a in axes for t in a.get_legend().get_texts())
    cm_ax = captured["m.png"].axes[0]
    assert cm_ax.get_ylabel() == "Keras reference prediction" and cm_ax.get_xlabel() == "tflite_int8 prediction"
    plt.close("all")
    import edgecnn.bench.report as br

    figs = {}
    real_save = br._savefig
    br._savefig = lambda fig, path: figs.setdefault(path.name, fig)
    try:
        bench(benched, config=BenchConfig(backends=("tflite",), runs=3, min_s=0, warmup_min_s=0, max_s=1,
                                          out=str(benched / "pl")))
    finally:
        br._savefig = real_save
    ax = figs["latency.png"].axes[0]
    assert ax.get_xscale() == "linear" and "thread" in ax.get_title() and "batch 1" in ax.get_title()
    assert any(t.get_text().endswith(("us", "ms")) for t in ax.texts)  # each bar's value written beside it
    plt.close("all")


def test_one_cli_dialect():
    import click

    from edgecnn.cli import ORDER, main

    res = cli("--help")
    listed = [ln.split()[0] for ln in res.output.split("Commands (in pipeline order):")[1].splitlines() if
              ln.startswith("  ") and not ln.startswith("   ")]
    assert listed == list(ORDER)
    assert "..." not in res.output.split("Commands")[1]  # whole summaries
    typo = cli("tarin")
    assert typo.exit_code == 2 and "did you mean 'train'?" in typo.output
    ctx = click.Context(main)
    for name in ORDER:
        cmd = main.get_command(ctx, name)
        opts = [p for p in cmd.params if isinstance(p, click.Option)]
        if name == "emulate":  # its options are the emulator's own (edgecnn emulate --help)
            continue
        assert "--quiet" in {o for p in opts for o in p.opts}, name
        assert all(p.help for p in opts), (name, [p.opts for p in opts if not p.help])


def test_quiet_prints_nothing_but_the_errors(benched, tmp_path):
    res = CliRunner().invoke(__import__("edgecnn.cli", fromlist=["main"]).main,
                             ["bench", str(benched), "--backends", "tflite", "--no-timing", "--quiet",
                              "--out", str(tmp_path / "q")])
    assert res.exit_code == 0 and res.stdout.strip() == "", res.stdout


def test_the_python_api_prints_no_runtime_noise(benched):
    """No TensorFlow, LiteRT or XNNPACK log lines on the Python path either (EDGECNN_NATIVE_LOGS=1 opts back in)."""
    import subprocess
    import sys

    code = ("from edgecnn.bench import BenchConfig, bench\n"
            f"r = bench({str(benched)!r}, config=BenchConfig(backends=('keras', 'tflite', 'litert-cpu'), "
            "timing=False, write=False))\nprint(' '.join(x.status for x in r.rows))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and set(p.stdout.split()) == {"ok"} and len(p.stdout.split()) == 5, p.stderr
    noise = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert not noise, noise[:5]


def test_tensorflows_retracing_advice_stays_off_the_screen():
    """A third `export()` in one Python session printed four 400-character "triggered tf.function retracing"
    warnings (each loaded Keras model traces its own predict function): the stages drop that one message, and
    every other TensorFlow warning still shows."""
    import logging

    import tensorflow as tf

    from edgecnn.native import _is_not_retracing_advice, quiet_tensorflow

    class Seen(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    def retrace(tag):  # a new tf.function of one Python function, traced each time: TF warns from the fifth
        def double(x):
            return x * 2
        for i in range(7):
            tf.function(double)(tf.constant(float(i)))
        logging.getLogger("tensorflow").warning("a warning users should read (%s)", tag)

    logger = logging.getLogger("tensorflow")
    seen = Seen()
    logger.addHandler(seen)
    try:
        logger.removeFilter(_is_not_retracing_advice)
        retrace("before")
        assert any("triggered tf.function retracing" in m for m in seen.messages), seen.messages  # the noise exists
        seen.messages.clear()
        quiet_tensorflow()
        retrace("after")
        assert seen.messages == ["a warning users should read (after)"], seen.messages
    finally:
        logger.removeHandler(seen)


def _workflow_steps():
    import yaml

    from pathlib import Path

    doc = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "ci" / "parity.yml").read_text())
    job = doc["jobs"]["parity"]
    return job["env"], [s for s in job["steps"] if "run" in s]


def test_the_ci_workflow_installs_from_the_repository_and_its_steps_parse():
    import subprocess

    env, steps = _workflow_steps()
    install = next(s for s in steps if s["name"] == "Install edgecnn")["run"]
    assert "pip install edgecnn " not in install + " " and "${EDGECNN_SOURCE}" in install
    assert env["EDGECNN_SOURCE"].startswith("git+https://")
    for s in steps:  # every shell step is valid bash
        p = subprocess.run(["bash", "-n"], input=s["run"], capture_output=True, text=True)
        assert p.returncode == 0, (s["name"], p.stderr)


@pytest.mark.slow
def test_the_ci_workflow_runs_as_written(tmp_path):
    """Every step of examples/ci/parity.yml, in order, as GitHub Actions would run it: the install from a
    repository URL (this checkout, as file://, no dependencies: they are installed here), then the rest."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env, steps = _workflow_steps()
    (tmp_path / "tests").mkdir()
    shutil.copy(repo / "examples" / "test_parity.py", tmp_path / "tests" / "test_parity.py")
    bin_dir = Path(sys.executable).parent
    run_env = {**os.environ, **{k: str(v) for k, v in env.items()}, "EDGECNN_SOURCE": f"file://{repo}",
               "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    run_env.pop("PYTEST_CURRENT_TEST", None)
    for s in steps:
        script = s["run"]
        if s["name"] == "Install edgecnn":  # offline: the same requirement string, into a scratch target
            script = script.replace("pip install", f"{sys.executable} -m pip install -q --no-deps "
                                                   f"--no-build-isolation --target {tmp_path / 'site'}")
        p = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=run_env, capture_output=True, text=True,
                           timeout=900)
        assert p.returncode == 0, (s["name"], p.stdout[-1500:], p.stderr[-1500:])
    assert (tmp_path / "site" / "edgecnn").is_dir() and (tmp_path / "bench" / "bench.json").is_file()


def test_terminal_tables_right_align_columns_of_figures():
    from rich.console import Console

    from edgecnn.reporting import figures_only, print_table

    console = Console(record=True, width=100)
    rows = [["tflite_fp32", "1109.0 KiB", "-"], ["tflite_int8", "86.3 KiB", "ptq"]]
    print_table("t", ["artifact", "size", "quant"], rows, console=console)
    rows = [ln for ln in console.export_text().splitlines() if "tflite_" in ln]
    assert "│ 1109.0 KiB │" in rows[0] and "│   86.3 KiB │" in rows[1], rows  # figures right, names left
    assert "│ -     │" in rows[0] and "│ ptq   │" in rows[1], rows
    assert figures_only(["0.258x", "-", "+0.00", "99.79%", "4.24e-02", "1,150"])
    assert not figures_only(["-", ""]) and not figures_only(["0.5", "ptq"])


def test_plots_scale_with_classes(tmp_path):
    """120 classes drew 14,400 counts on a 5,300-px figure in 28 s (300: 112 s, 15 MB a plot, and bench writes
    one per int8 artifact into the report): past 30 classes cells carry no counts, the figure stops growing and a
    log colour scale shows a single off-diagonal image. Short runs: integer epoch ticks, a 1-epoch run visible."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt

    from edgecnn import reporting

    captured = {}
    real = reporting._save
    reporting._save = lambda fig, path: captured.setdefault(path.name, fig)
    try:
        for n in (10, 120):
            cm = np.eye(n, dtype=int) * 50
            cm[3, 7] = 1  # one image the int8 model moved
            reporting.plot_confusion(cm, [f"class_{i}" for i in range(n)], tmp_path / f"m{n}.png")
        reporting.plot_curves({"loss": [0.5], "val_loss": [0.6], "accuracy": [0.8], "val_accuracy": [0.7]},
                              tmp_path / "c1.png")
        reporting.plot_curves({"loss": [0.5, 0.4, 0.3], "val_loss": [0.6, 0.5, 0.55], "accuracy": [0.8, 0.85, 0.9],
                               "val_accuracy": [0.7, 0.75, 0.74]}, tmp_path / "c3.png")
    finally:
        reporting._save = real
    small, big = captured["m10.png"], captured["m120.png"]
    assert len(small.axes[0].texts) == 100 and len(big.axes[0].texts) == 0
    assert max(big.get_size_inches()) <= reporting.CONFUSION_INCHES
    assert len(big.axes[0].get_xticks()) <= reporting.LABELLED_CLASSES
    image = big.axes[0].images[0]
    one, none = image.to_rgba(image.get_array())[3, 7], image.to_rgba(image.get_array())[3, 8]
    assert tuple(none) == (1.0, 1.0, 1.0, 1.0) and min(one[:3]) < 0.8  # an empty cell white, a 1 visibly blue
    for name in ("c1.png", "c3.png"):
        for ax in captured[name].axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
    assert captured["c1.png"].axes[0].lines[0].get_marker() == "o"
    plt.close("all")


def test_long_classification_report_is_folded(tmp_path):
    from edgecnn.report import _run_section

    def section(n):
        per_class = {f"c{i:03d}": {"precision": 1.0, "recall": 1.0, "f1-score": 1.0 - (i == 7) * 0.25, "support": 5}
                     for i in range(n)}
        return _run_section(tmp_path, {}, {"per_class": per_class, "report_text": "the report"})

    assert "<details>" not in section(30) and "<pre>the report</pre>" in section(30)
    folded = section(150)
    assert "<details><summary>150 classes; lowest F1: c007 0.750, c000 1.000" in folded
    assert "<pre>the report</pre></details>" in folded
