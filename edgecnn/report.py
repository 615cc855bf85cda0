"""RUN/report.html: one self-contained page with everything a run produced. Data and model, training curves,
confusion matrix and classification report, a search's trials (`edgecnn tune`), the export table (with the quantization recipe), the bench table
and plots, device and board rows, and the manifest. Images are inlined (data: URIs): the page needs no network
and no file beside it, so it can be mailed or attached to a CI job as it is.

Python::

    from edgecnn.report import write_report
    write_report("runs/d")          # RUN/report.html

CLI::

    edgecnn report runs/d

Train, export and bench refresh it after they write (`refresh`); it reads only the files a run folder holds.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import re
from pathlib import Path
from typing import Optional

from edgecnn.contracts.parity import one_class_on_test
from edgecnn.contracts.rows import kib, ms, trial_figures, trial_number, trial_params

REPORT = "report.html"
FOLDED_CLASSES = 30  # a longer classification report is folded under its five lowest-F1 classes

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } td.n { text-align: right; white-space: nowrap; }
td.w { overflow-wrap: anywhere; min-width: 8rem; } table.wide { font-size: 13px; }
table.wide th, table.wide td { padding: 3px 5px; }
div.scroll { overflow-x: auto; }
tr.skipped td { color: #888; } tr.failed td { color: #b00; }
img { max-width: 100%; box-sizing: border-box; border: 1px solid #eee; margin: .5rem 0; display: block; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: 12px; }
.verdict-ok { color: #070; font-weight: 600; } .verdict-bad { color: #b00; font-weight: 600; }
.muted { color: #777; }
"""
# Records on <body> whether every image decoded and whether a script error happened: what a headless browser
# (tests/test_report.py) reads back, and what a person can see in the footer.
_CHECK = """
<script>
window.__errors = [];
window.addEventListener('error', e => { window.__errors.push(String(e.message)); });
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.dataset.images = imgs.length;
  document.body.dataset.broken = broken;
  document.body.dataset.errors = window.__errors.length;
  const right = document.body.getBoundingClientRect().right - parseFloat(getComputedStyle(document.body).paddingRight);
  document.body.dataset.overflow = Array.from(document.querySelectorAll('table, pre, img'))
    .filter(t => t.getBoundingClientRect().right > right + 1).length;  // past the text column, not the page's margin
  const f = document.getElementById('selfcheck');
  if (f) f.textContent = imgs.length + ' image(s), ' + broken + ' not drawn';
});
</script>
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _wrappable(v) -> str:
    """Escaped text whose long names (over 20 characters: paths, Vela's config names) may break after a '/' or
    '_' rather than anywhere: "Ethos_U55_High_<wbr>End_<wbr>Embedded", not "Ethos_U55_High_End_Embedd" / "ed"."""
    return re.sub(r"\S{21,}", lambda m: re.sub(r"([/_])(?=\w)", r"\1<wbr>", m.group()), _e(v))


def _table(headers, rows, numeric=(), row_class=None, wrap=()) -> str:
    """An HTML table; `numeric` columns right-aligned, `wrap` columns (long notes naming libraries and paths) may
    break after '/' or '_', inside a word only as a last resort, and a table with such a column is set smaller,
    so it fits a 1100-pixel page; on a narrower window it scrolls by itself rather than the page."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, r in enumerate(rows):
        cls = f' class="{_e(row_class[i])}"' if row_class else ""
        body.append(f"<tr{cls}>" + "".join(f'<td{" class=n" if j in numeric else " class=w" if j in wrap else ""}>'
                                           f'{_wrappable(c) if j in wrap else _e(c)}</td>' for j, c in enumerate(r))
                    + "</tr>")
    table = f"<table{' class=wide' if wrap else ''}><tr>{head}</tr>{''.join(body)}</table>"
    return f'<div class="scroll">{table}</div>'


def _f(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _run_section(run: Path, config: dict, metrics: Optional[dict]) -> str:
    from edgecnn.data import turned_line
    from edgecnn.data.duplicates import duplicate_warnings
    from edgecnn.data.groups import group_line
    from edgecnn.imported_fit import fit_text

    model, data, ds = config.get("model", {}), config.get("data", {}), config.get("dataset", {})
    shape = "x".join(map(str, model.get("input_shape", [])))
    imported = "source" in model  # `edgecnn import`: trained elsewhere
    rows = [("data", f"{data.get('source')}: train {ds.get('train')} / val {ds.get('val')} / test {ds.get('test')}"
                     f" images, {ds.get('classes')} classes"),
            ("preprocessing", json.dumps(config.get("preprocessing"))),
            *([("orientation", turned_line(ds))] if turned_line(ds) else []),
            *([("groups", group_line(ds))] if group_line(ds) else []),
            *[("copies", w) for w in duplicate_warnings(ds.get("duplicates") or {}, ds.get("test") or 0)],
            *[("copies", why) for why in [((ds.get("duplicates") or {}).get("near") or {}).get("skipped")] if why],
            ("model", f"imported from {model['source']}, input {shape}" if imported else
             f"{model.get('arch')} {json.dumps(model['params']) if model.get('params') else '(default parameters)'}"
             f", input {shape}")]
    if imported:
        fit = model.get("input_range_val_fit") or {}
        turned = model.get("orientation_fit")
        rows += [("input range", str(model.get("input_range", "")) + (f" ({fit_text(fit)})" if fit else "")),
                 *([("orientation measured", f"accuracy on {turned['images']} training/validation photos that "
                                            f"carry an EXIF orientation: read upright {turned['exif']:.3f}, as stored "
                                            f"{turned['stored']:.3f}")] if turned else []),
                 ("added", ", ".join(model.get("wrapped") or []) or "nothing")]
    if metrics:
        rows += [("test accuracy", _f(metrics.get("test_accuracy"), ".4f")),
                 ("test loss", _f(metrics.get("test_loss"), ".4f")), ("macro F1", _f(metrics.get("macro_f1"), ".4f"))]
    out = ["<h2>Data and model</h2>", _table(("", "value"), rows)]
    stuck = one_class_on_test(metrics or {})
    if stuck:
        out.append(f'<p class="verdict-bad">warning: {_e(stuck)}</p>')
    out += ["<h2>Imported model</h2>" if imported else "<h2>Training</h2>", _img(run / "curves.png", "training curves"),
            _img(run / "confusion_matrix.png", "confusion matrix on the test split")]
    report = (metrics or {}).get("report_text") or ((run / "classification_report.txt").read_text()
                                                     if (run / "classification_report.txt").is_file() else "")
    per_class = (metrics or {}).get("per_class") or {}
    if report and len(per_class) > FOLDED_CLASSES:  # 150 classes were two screens of 1.0000s: the worst first
        worst = sorted(per_class.items(), key=lambda kv: (kv[1]["f1-score"], kv[0]))[:5]
        lowest = ", ".join(f"{name} {v['f1-score']:.3f}" for name, v in worst)
        out.append(f"<h3>Classification report (test split)</h3><details><summary>{len(per_class)} classes; lowest "
                   f"F1: {_e(lowest)} (open for every class)</summary><pre>{_e(report)}</pre></details>")
    elif report:
        out.append(f"<h3>Classification report (test split)</h3><pre>{_e(report)}</pre>")
    return "\n".join(out)


def _search_section(run: Path, doc: dict) -> str:
    """`edgecnn tune`'s search: every trial (best first), the architecture's defaults trained the same way, and
    with a device budget each trial's int8 figures, the Pareto front and its plot."""
    dev = doc.get("device") or {}
    budget = dev.get("budget") or {}
    limits = ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in budget.items() if k.startswith("max") and v)
    measured = bool(budget)

    def device_cells(t: dict) -> tuple:
        if not measured:
            return ()
        return (*trial_figures(t), "yes" if t.get("pareto") else "",
                "" if "over_budget" not in t or not limits else "over" if t["over_budget"] else "inside")

    workers = doc.get("workers") or {}
    by = (lambda t: (t.get("worker") or "",)) if workers.get("workers") else (lambda t: ())  # a worker column
    objective = doc.get("objective", "val_accuracy")
    rows = [(trial_number(t.get("trial_id")), _f(t.get(objective, t.get("score")), ".4f"), _f(t.get("seconds"), ".1f"),
             *by(t), *device_cells(t),
             trial_params(t.get("params")))
            for t in doc.get("trials", [])]
    if doc.get("defaults_score") is not None:
        rows.append(("defaults", _f(doc["defaults_score"], ".4f"), "", *by({}),
                     *device_cells(dev.get("defaults_figures") or {}), "the architecture's defaults"))
    headers = ("trial", doc.get("objective", "score"), "seconds", *by({"worker": "worker"}),
               *(("int8 latency ms", "int8 KiB", "arena KiB", "Pareto", "budget") if measured else ()),
               "hyperparameters")
    facts = [f"{len(doc.get('trials', []))} trials in {_f(doc.get('search_seconds'), '.0f')} s"
             + (f" on {workers['workers']} workers" if workers.get("workers") else "")]
    if measured:
        facts.append(f"int8 measured on {budget.get('measure_on')}" + (f", budget {limits}: "
                     f"{dev.get('inside_budget')} trial(s) inside" if limits else ""))
    if doc.get("search_beat_defaults") is False:
        facts.append("the search found nothing better than the architecture's defaults, which were retrained")
    out = ["<h2>Search</h2>",
           f"<p>{_e('; '.join(facts))}. The run above is "
           + ("the defaults" if doc.get("search_beat_defaults") is False else "the best trial's hyperparameters")
           + " retrained in full.</p>",
           _table(headers, rows, numeric=tuple(i for i, h in enumerate(headers) if h not in
                                               ("trial", "worker", "Pareto", "budget", "hyperparameters")),
                  wrap=(len(headers) - 1,))]
    if dev.get("plot"):
        out.append(_img(run / dev["plot"], "int8 accuracy against latency and size, the Pareto front"))
    return "\n".join(out)


def _differ(a: dict, split: str) -> str:
    return f"{a[split + '_flips']} of {a[split + '_images']}" if split + "_flips" in a else ""


def _auto_html(name: str, auto: dict) -> str:
    """`--quant auto`'s recipe: what it kept in float, every attempt's validation figures (and its test figures,
    measured after the choice), and the float model's rounding floors."""
    from edgecnn.graph import layer_name

    t = auto.get("targets", {})
    kept = [layer_name(k) for k in auto.get("kept_float") or []]
    share = auto.get("int8_mac_share")
    out = [f"<h3>--quant auto ({_e(name)})</h3>",
           f"<p>Targets on the {_e(t.get('split'))} split: agreement &ge; {_f(t.get('min_agreement'), '.4f')}, "
           f"drop &le; {_e(t.get('max_acc_drop_pts'))} points, &ge; {_f(t.get('min_int8_macs'), '.0%')} of the "
           f"conv/dense MACs on int8. Chosen: <b>{_e(auto.get('chosen'))}</b>, "
           f"{_f(share, '.1%') or '-'} of the MACs on int8; "
           + (f"kept in float: {_e(', '.join(kept))}." if kept else "fully int8.") + "</p>"]
    attempts = auto.get("attempts", [])
    tested = any("test_flips" in a for a in attempts)  # one attempt: its test figures are the artifact's, above
    rows = [(a.get("name"), len(a.get("kept_float") or []), _f(a.get("int8_mac_share"), ".1%"),
             kib(a.get("size_bytes")),
             _f(a.get("val_agreement"), ".4f"), _differ(a, "val"), _f(a.get("val_accuracy_drop_pts"), "+.2f"),
             *((_f(a.get("test_agreement"), ".4f"), _differ(a, "test"), _f(a.get("test_accuracy_drop_pts"), "+.2f"))
               if tested else ()),
             "yes" if a.get("meets") else ("error: " + a["error"] if a.get("error") else "no"))
            for a in attempts]
    headers = ("attempt", "layers in float", "int8 MACs", "size", "val agreement", "val differ", "val drop (pts)",
               *(("test agreement", "test differ", "test drop (pts)") if tested else ()), "meets targets")
    out.append(_table(headers, rows, numeric=tuple(range(1, len(headers) - 1))))
    if tested:
        out.append("<p class=muted>Test figures are measured after the choice and never used for it.</p>")
    floors = auto.get("rounding_floors") or {}
    if floors:
        out.append("<p>The float model against itself on validation with only these rounded to int8 (activations "
                   "float): a recipe that keeps them int8 cannot be expected to do better.</p>")
        rows = [(k.replace("_", " "), _f(f.get("agreement"), ".4f"), f"{f.get('flips')} of {f.get('images')}",
                 _f(f.get("accuracy_drop_pts"), "+.2f")) for k, f in floors.items()]
        out.append(_table(("rounded", "agreement", "differ", "drop (pts)"), rows, numeric=(1, 2, 3)))
    return "\n".join(out)


def _kernels_html(artifacts: dict) -> str:
    """The int8 artifacts' figures on each arithmetic the manifest records: the TFLite's kernel sets (XNNPACK,
    builtin, reference), the ONNX's Q/DQ applied in float ("qdq")."""
    def row(name, kernels, b):
        return (name, kernels, _f(b.get("accuracy"), ".4f"), _f(b.get("accuracy_drop"), "+.2f"),
                _f(b.get("top1_agreement"), ".4f"), b.get("runtime") or b.get("skipped") or "")

    rows = []
    for name, a in artifacts.items():
        if a.get("parity_kernels"):
            rows.append(row(name, "verified on", dict(a.get("parity", {}), runtime=a.get("runtime"))))
            rows += [row(name, kernels, b) for kernels, b in a["parity_kernels"].items()]
    if not rows:
        return ""
    return ("<h3>int8 on each kernel set</h3><p class=muted>The kernels round int8 differently; the device's figures "
            "are those of the kernels it runs (TFLite Micro: the reference kernels). qdq: the int8 ONNX with its "
            "Q/DQ pairs applied in float, the file's own arithmetic, which onnxruntime's int8 kernels should match "
            "to a rounding step.</p>"
            + _table(("artifact", "kernels", "accuracy", "drop (pts)", "agreement", "runtime"), rows,
                     numeric=(2, 3, 4)))


def _export_section(manifest: dict, run: Optional[Path] = None) -> str:
    rows, recipe = [], []
    for name, a in manifest.get("artifacts", {}).items():
        p, d = a.get("parity", {}), a.get("details", {})
        ratio = d.get("size_ratio_to_fp32")
        rows.append((name, a.get("file"), a.get("precision"), a.get("quant") or "-",
                     kib(a.get("size_bytes")), f"{ratio:.3f}x" if ratio else "",
                     _f(p.get("accuracy"), ".4f"), _f(p.get("accuracy_drop"), "+.2f"),
                     _f(p.get("top1_agreement"), ".4f"), _f(p.get("max_abs_diff"), ".2e"), a.get("runtime")))
        if a.get("precision") == "int8":
            recipe.append(f"<li><b>{_e(name)}</b>: {_e(d.get('method'))}"
                          + (f", {_e(d.get('calibration_samples'))} calibration images" if d.get(
                              "calibration_samples") else "")
                          + (f", I/O {_e(d.get('io'))}" if d.get("io") else "") + "</li>")
    ref = manifest.get("reference", {})
    return "\n".join([
        "<h2>Export</h2>",
        f"<p>Each artifact verified against the Keras model (accuracy {_f(ref.get('accuracy'), '.4f')} on "
        f"{_e(ref.get('n'))} test images) before it was written.</p>",
        "".join(f'<p class="verdict-bad">warning: {_e(w)}</p>' for w in manifest.get("warnings") or []),
        _table(("artifact", "file", "precision", "quant", "size", "int8/fp32", "accuracy", "drop (pts)", "agreement",
                "max |diff|", "verified on"), rows, numeric=(4, 5, 6, 7, 8, 9)),
        f"<h3>Quantization recipe</h3><ul>{''.join(recipe)}</ul>" if recipe else "",
        *(_auto_html(name, a["details"]["auto"]) for name, a in manifest.get("artifacts", {}).items()
          if (a.get("details") or {}).get("auto")),
        _kernels_html(manifest.get("artifacts", {})),
        _img(run / "layers.png", "int8 error per layer (edgecnn inspect --layers)") if run is not None else "",
    ])


def _bench_section(bench_dir: Path, doc: dict) -> str:
    from edgecnn.contracts.rows import is_local, skipped_groups, worst_class_text

    rows, classes, boards = [], [], []
    for r in doc.get("rows", []):
        lat = r.get("latency") or {}
        worst = worst_class_text(r.get("class_drop"), r.get("worst_class"))  # a class's recall falling: first
        note = "; ".join(t for t in (f"worst class (pts): {worst}" if worst else "",
                                     r.get("reason") or r.get("note") or "") if t)
        cells = (r.get("artifact"), r.get("backend"), r.get("accelerator"), r.get("status"),
                 _f(r.get("accuracy"), ".4f"), _f(r.get("accuracy_drop"), "+.2f"), _f(r.get("agreement"), ".4f"),
                 _f(r.get("max_abs_diff"), ".2g"), ms(lat.get("median_ms")), ms(lat.get("p90_ms")),
                 r.get("integrity"), note)
        if not is_local(r.get("device")):
            boards.append((r.get("device"), *cells))
        elif r.get("status") != "skipped":  # skipped rows: below, each runtime's reason once
            rows.append(cells)
            classes.append(r.get("status") or "")
    groups = [g for g in skipped_groups(doc.get("rows", [])) if is_local(g[1])]
    skipped = [(b, ", ".join(arts), why) for b, _, arts, why in groups]
    headers = ("artifact", "backend", "accelerator", "status", "accuracy", "drop (pts)", "agreement", "max |dp|",
               "median", "p90", "integrity", "reason / note")
    violations = doc.get("violations") or []
    verdict = ('<p class="verdict-bad">parity gates failed:</p><ul>' + "".join(f"<li>{_e(v)}</li>" for v in violations)
               + "</ul>") if violations else (
        '<p class="verdict-ok">parity gates passed</p>' if any(doc.get("settings", {}).get(k) is not None
                                                                for k in ("max_acc_drop", "min_agreement",
                                                                          "max_abs_diff", "max_class_drop")) else "")
    host = doc.get("host", {})
    verdict = "".join(f'<p class="verdict-bad">warning: {_e(w)}</p>' for w in doc.get("warnings") or []) + verdict
    out = ["<h2>Bench</h2>",
           f"<p class=muted>{_e(host.get('cpu'))}, {_e(host.get('cpus'))} CPUs, {_e(host.get('os'))}; "
           f"{_e(doc.get('settings', {}).get('threads'))} thread(s); {_e(doc.get('settings', {}).get('timing'))}</p>",
           verdict, _table(headers, rows, numeric=(4, 5, 6, 7, 8, 9), row_class=classes, wrap=(11,)) if rows else ""]
    if skipped:
        out += [f"<p class=muted>Skipped: {sum(len(g[2]) for g in groups)} row(s), each "
                "runtime's reason once (bench.json has every row).</p>",
                _table(("backend", "artifacts", "reason"), skipped, row_class=["skipped"] * len(skipped), wrap=(2,))]
    for png in ("latency.png", "accuracy_vs_latency.png"):
        out.append(_img(bench_dir / png, png))
    for png in sorted(bench_dir.glob("confusion_*_vs_keras.png")):
        out.append(_img(png, png.name))
    if boards:
        out += ["<h2>Devices and boards</h2>",
                _table(("device", *headers), boards, numeric=(5, 6, 7, 8, 9, 10), wrap=(0, 12))]
    return "\n".join(out)


def render(run_dir) -> str:
    """The page for `run_dir` as a string (the parts the run has so far)."""
    run = Path(run_dir)
    config = _read(run / "config.json") or {}
    metrics = _read(run / "metrics.json")
    manifest = _read(run / "export" / "manifest.json")
    bench_doc = _read(run / "bench" / "bench.json")
    parts = [f"<h1>edgecnn run: {_e(run.resolve().name)}</h1>",
             f"<p class=muted>{_e(run.resolve())} &middot; report written "
             f"{_e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))}</p>"]
    if config:
        parts.append(_run_section(run, config, metrics))
    search = _read(run / "trials.json")
    if search and search.get("trials"):
        parts.append(_search_section(run, search))
    parts.append(_export_section(manifest, run) if manifest else "<h2>Export</h2><p class=muted>not exported yet: "
                 f"<code>edgecnn export {_e(run)}</code></p>")
    if bench_doc and not bench_doc.get("partial"):
        parts.append(_bench_section(run / "bench", bench_doc))
    else:
        parts.append(f"<h2>Bench</h2><p class=muted>not benched yet: <code>edgecnn bench {_e(run)}</code></p>")
    if manifest:
        parts.append(f"<h2>Manifest</h2><details><summary>manifest.json</summary><pre>"
                     f"{_e(json.dumps(manifest, indent=2))}</pre></details>")
    parts.append('<p class=muted>self-check: <span id="selfcheck">scripts off</span></p>')
    return ("<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>edgecnn: {_e(run.resolve().name)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(p for p in parts if p) + _CHECK + "\n</body></html>\n")


def write_report(run_dir) -> Path:
    """Write RUN/report.html (atomically) and return its path.

    Raises:
        ConfigError: `run_dir` is not a run directory.
    """
    from edgecnn.errors import ConfigError
    from edgecnn.io import write_text

    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise ConfigError(f"{run}: not a run directory (no config.json)")
    return write_text(run / REPORT, render(run))


def refresh(run_dir) -> Optional[Path]:
    """`write_report` for the stages: a report that cannot be written never fails the stage that called it."""
    try:
        return write_report(run_dir)
    except Exception:  # the stage's own outputs are what matter; `edgecnn report` shows the reason
        return None
