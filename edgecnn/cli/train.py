"""`edgecnn train` and `edgecnn tune`: options -> TrainConfig / TuneConfig -> library call -> summary table."""
from __future__ import annotations

import json
import sys

import click

from edgecnn.cli.common import user_errors, warn


def _parse_params(items) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--param")
        k, v = item.split("=", 1)
        try:
            params[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            params[k.strip()] = v
    return params


def data_options(fn):
    """Options that choose and preprocess the data (shared by train and tune)."""
    for opt in reversed([
        click.option("--data", "source", default="digits", show_default=True,
                     help="digits, mnist, fashion_mnist, cifar10, an .npz file or an image folder (one subfolder per class)."),
        click.option("--image-size", nargs=2, type=int, default=None, metavar="H W",
                     help="Resize images to H x W (e.g. 28 28 for MNIST geometry). Default: the source's size."),
        click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="Convert images to 1 or 3 channels."),
        click.option("--orientation", type=click.Choice(["exif", "stored"]), default="exif", show_default=True,
                     help="Image files: exif reads a photo upright, as a viewer shows it (its EXIF Orientation tag "
                          "applied: phones store portrait photos sideways with a tag); stored reads the pixels as "
                          "stored, as Keras' image_dataset_from_directory and torchvision do. Recorded in the "
                          "manifest; the on-device script reads files the same way."),
        click.option("--val-fraction", type=float, default=0.2, show_default=True,
                     help="Share of the training pool held out for validation."),
        click.option("--test-fraction", type=float, default=0.2, show_default=True,
                     help="Share held out for test when the source has no test split."),
        click.option("--limit", type=int, default=None, help="Use at most this many training images."),
        click.option("--group-by", type=click.Choice(["none", "subfolder", "near"]), default="none",
                     show_default=True,
                     help="Keep groups of images in one split, so the test split holds no burst shot, video frame "
                          "or session whose siblings were trained on: subfolder groups an image folder's "
                          "class/SESSION/image.jpg by SESSION; near groups near copies as the model sees them "
                          "(reads and compares every image once; kept beside the image cache)."),
    ]):
        fn = opt(fn)
    return fn


def train_options(fn):
    """Options of a training run (shared by train and tune)."""
    for opt in reversed([
        click.option("--out", default="runs/digits", show_default=True, type=click.Path(file_okay=False),
                     help="Run directory."),
        click.option("--arch", default="simple_cnn", show_default=True,
                     help="simple_cnn, convnet, tf_cnn, cifar_cnn, vgg_cifar, resnet8, mobilenet_v2, or your own "
                          "builder as package.module:function (signature build(keras, input_shape, num_classes, "
                          "**params))."),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Hyperparameter override, repeatable (e.g. filters=32, alpha=0.35, learning_rate=0.001)."),
        click.option("--epochs", type=int, default=60, show_default=True, help="Maximum epochs (early stopping ends sooner)."),
        click.option("--batch-size", type=int, default=32, show_default=True,
                     help="Images per training step (small batches suit small datasets and BatchNorm)."),
        click.option("--patience", type=int, default=10, show_default=True, help="Early-stopping patience (val_loss)."),
        click.option("--augment/--no-augment", default=False, show_default=True,
                     help="Random shift, rotation and zoom of training images."),
        click.option("--flip/--no-flip", default=False, show_default=True,
                     help="Also random horizontal flips (off for digits and text)."),
        click.option("--precise-bn/--no-precise-bn", default=True, show_default=True,
                     help="Re-measure BatchNorm statistics for the current weights before each validation (on up "
                          "to 1,024 training images); off: Keras' moving averages alone, which small data never settles."),
        click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True,
                     help="balanced: weight each class's loss by n / (classes x its count), so a rare class counts as "
                          "much as a common one (imbalanced folders: ok/defect, empty/person); each epoch also logs "
                          "val_balanced_accuracy (mean per-class recall), which a search then maximises."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split, Python, NumPy and TensorFlow."),
        click.option("--overwrite", is_flag=True, help="Replace a non-empty run directory."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run (or search) in --out."),
        click.option("--backup-every", type=float, default=10.0, show_default=True, metavar="SECONDS",
                     help="Write the --resume state at most this often (and on Ctrl-C); 0: after every epoch."),
        click.option("-v", "--verbose", count=True,
                     help="Progress: one line per epoch (the default on a terminal; -v also in a pipe), -vv Keras' "
                          "progress bar, -vvv Keras' own epoch lines."),
        click.option("--stream", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
                     help="on: preprocess each batch from the raw pixels as training reads it (memory independent of "
                          "the number of images); off: every split in memory as float32; auto: on for image folders "
                          "and for data whose float32 splits exceed 512 MB."),
        click.option("--freeze-epochs", type=int, default=0, show_default=True,
                     help="Transfer learning (e.g. --param weights=imagenet): train only the head for this many epochs "
                          "on a frozen base (BatchNorm in inference mode), then unfreeze."),
        click.option("--fine-tune-at", default=None, metavar="LAYER",
                     help="After --freeze-epochs, unfreeze layers from this index or layer name on (default: all); "
                          "BatchNorm layers stay frozen."),
        click.option("--fine-tune-lr", type=float, default=None,
                     help="Learning rate after unfreezing (default: a tenth of learning_rate)."),
        click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), default="default",
                     show_default=True, help="mirrored: every GPU of this machine (tf.distribute.MirroredStrategy); "
                     "multiworker: several machines, each with TF_CONFIG set (docs/distributed.md)."),
    ]):
        fn = opt(fn)
    return fn


def _train_config(o: dict):
    from edgecnn.data import DataConfig
    from edgecnn.train import AugmentConfig, TrainConfig

    data = DataConfig(
        source=o["source"], image_size=tuple(o["image_size"]) if o["image_size"] else None,
        channels=int(o["channels"]) if o["channels"] else None, val_fraction=o["val_fraction"],
        test_fraction=o["test_fraction"], seed=o["seed"], limit=o["limit"], orientation=o["orientation"],
        group_by=o["group_by"],
    )
    augment = AugmentConfig(flip=o["flip"]) if o["augment"] else None
    return TrainConfig(
        out=o["out"], data=data, arch=o["arch"], params=_parse_params(o["params"]), epochs=o["epochs"],
        batch_size=o["batch_size"], patience=o["patience"], augment=augment, precise_bn=o["precise_bn"], seed=o["seed"],
        overwrite=o["overwrite"], resume=o["resume"], backup_every_s=o["backup_every"],
        verbose={0: 0, 1: 0, 2: 1}.get(o["verbose"], 2), strategy=o["strategy"], stream=o["stream"],
        class_weight=o["class_weight"],
        freeze_epochs=o["freeze_epochs"], fine_tune_lr=o["fine_tune_lr"],
        fine_tune_at=int(o["fine_tune_at"]) if (o["fine_tune_at"] or "").isdigit() else o["fine_tune_at"],
        progress=(sys.stdout.isatty() or o["verbose"] >= 1) and not o.get("as_json"),
    )


def _left_out(dataset: dict) -> str:
    """"; left out 8 files that are not images (hidden 4, .txt 2, ...)" for an image folder with other files."""
    other = dataset.get("not_images") or {}
    if not other:
        return ""
    from edgecnn.script.edgecnn_infer import heif_hint

    kinds = ", ".join(f"{k} {n}" for k, n in sorted(other.items(), key=lambda kv: -kv[1]))
    hint = heif_hint(other)
    return f"; left out {sum(other.values())} file(s) that are not images ({kinds})" + (f"; {hint}" if hint else "")


def print_train_summary(result) -> None:
    from edgecnn.data import turned_line
    from edgecnn.data.groups import group_line
    from edgecnn.reporting import print_table

    m = result.metrics
    rows = [
        ("run directory", str(result.run_dir)),
        ("architecture", f"{result.spec.arch}  {json.dumps(result.spec.resolved())}"),
        ("data", f"train {result.dataset['train']} / val {result.dataset['val']} / test {result.dataset['test']}, "
                 f"input {'x'.join(map(str, result.dataset['input_shape']))}" + _left_out(result.dataset)),
        *([("image cache", result.cache)] if result.cache else []),
        *([("orientation", turned_line(result.dataset))] if turned_line(result.dataset) else []),
        *([("groups", group_line(result.dataset))] if group_line(result.dataset) else []),
        ("epochs run", str(len(result.history.get("loss", []))) + (f" on {result.replicas} replicas"
                                                                  if result.replicas > 1 else "")),
        ("best val_loss", f"{min(result.history.get('val_loss', [float('nan')])):.4f}"),
        ("test accuracy", f"{m['test_accuracy']:.4f}"),
        ("test loss", f"{m['test_loss']:.4f}"),
        ("macro F1", f"{m['macro_f1']:.4f}"),
        ("time", f"{result.seconds:.1f} s"),
    ]
    print_table("edgecnn train", ("", "value"), rows)
    for w in result.warnings:
        warn(w)


def _run_tune(o: dict, max_trials: int, trial_epochs: int, **dist) -> None:
    from edgecnn.contracts.rows import trial_number, trial_params
    from edgecnn.tune import TuneConfig, tune

    from edgecnn.reporting import print_table

    result = tune(TuneConfig(train=_train_config(o), max_trials=max_trials, trial_epochs=trial_epochs, **dist))
    if dist.get("worker_of"):
        click.echo(f"worker{dist.get('worker_index', 0)}: the chief at {dist['worker_of']} has no more trials")
        return
    if o.get("as_json"):
        click.echo(json.dumps({"best": result.best_params, "objective": result.objective, "trials": result.trials,
                               "defaults_score": result.defaults_score, "used_defaults": result.used_defaults,
                               "device": result.device,
                               "test_accuracy": result.train.metrics["test_accuracy"] if result.train else None,
                               "warnings": result.train.warnings if result.train else []},
                              indent=2, default=str))
        for w in result.train.warnings if result.train else []:
            warn(w)
        return
    objective = result.objective
    rows = [(trial_number(t["trial_id"]), _f4(t.get(objective, t["score"])), _f1(t.get("seconds")),
             t.get("worker") or "-",
             trial_params(t["params"]))
            for t in result.trials]
    rows.append(("defaults", _f4(result.defaults_score), "", "", "the architecture's defaults"))
    print_table(f"trials (best first; {result.run_dir}/trials.json)", ("trial", objective, "seconds",
                                                                       "worker", "hyperparameters"), rows)
    if result.used_defaults:
        click.echo(f"note: the search found nothing better than the defaults ({objective} "
                   f"{_f4(result.defaults_score)} against the best trial's "
                   f"{_f4(result.trials[0].get(objective, result.trials[0]['score']) if result.trials else None)}"
                   f"{_budget_aside(result.device)}): the defaults are retrained, as `edgecnn train` would")
    if result.device:
        _print_pareto(result)
    click.echo(f"best hyperparameters of the search: {json.dumps(result.best_params)}"
               + ("; retrained: the architecture's defaults" if result.used_defaults else ""))
    if result.train:
        print_train_summary(result.train)


def _print_pareto(result) -> None:
    """The device figures of every trial, the Pareto front marked, and where the plot is."""
    from edgecnn.contracts.rows import trial_figures, trial_number
    from edgecnn.reporting import print_table

    dev = result.device
    budget = dev["budget"]
    objective = result.objective
    rows = [(trial_number(t["trial_id"]), _f4(t.get(objective)), *trial_figures(t),
             "yes" if t.get("pareto") else "", "over" if t.get("over_budget") else "inside")
            for t in sorted(result.trials, key=lambda t: (not t.get("pareto"), -(t.get(objective) or 0)))]
    d = dev.get("defaults_figures")
    if d:  # the architecture's defaults, measured the same way, for comparison
        rows.append(("defaults", _f4(result.defaults_score), *trial_figures(d), "",
                     "over" if d.get("over_budget") else "inside" if "over_budget" in d else ""))
    limits = ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in budget.items() if k.startswith("max") and v)
    print_table(f"device figures (int8 on {budget['measure_on']}; budget: {limits or 'none'})",
                ("trial", objective, "latency ms", "size KiB", "arena KiB", "Pareto", "budget"), rows)
    if dev.get("plot"):
        click.echo(f"Pareto plot: {result.run_dir / dev['plot']}")
    if budget.get("max_latency_ms") or budget.get("max_size_kb") or budget.get("max_arena_kb"):
        click.echo(f"{dev['inside_budget']} of {len(result.trials)} trials inside the budget" +
                   ("; retrained the defaults" if result.used_defaults else
                    f"; retrained the best of them (trial {trial_number(dev['best_inside_budget'])})"
                    if dev.get("best_inside_budget") is not None else "; none inside: retrained the best over it"))


def _budget_aside(dev: dict) -> str:
    """How the defaults and the best trial stand against a device budget, for the defaults note."""
    d = dev.get("defaults_figures") or {}
    if not dev or "over_budget" not in d or not any(dev["budget"].get(k) for k in dev["budget"] if k.startswith("max")):
        return ""
    trial = "inside" if dev.get("inside_budget") else "over"
    return " on the same budget: the defaults " + ("over" if d["over_budget"] else "inside") + f", the trial {trial}"


def _f4(v) -> str:
    return "" if v is None else f"{v:.4f}"


def _f1(v) -> str:
    return "" if v is None else f"{v:.1f}"


@click.command()
@data_options
@train_options
@click.option("--tune", "do_tune", is_flag=True, help="Bayesian search (KerasTuner) first, then retrain the best.")
@click.option("--max-trials", type=int, default=10, show_default=True, help="Trials of the search (with --tune).")
@click.option("--trial-epochs", type=int, default=8, show_default=True, help="Epochs per trial (with --tune).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (no progress lines).")
@user_errors
def train(do_tune, max_trials, trial_epochs, as_json, **o):
    """Train a classifier and write a run directory (model.keras, config.json, metrics, plots)."""
    o["as_json"] = as_json
    if do_tune:
        return _run_tune(o, max_trials, trial_epochs)
    from edgecnn.train import train as run_train

    result = run_train(_train_config(o))
    if as_json:
        click.echo(json.dumps({"run_dir": str(result.run_dir), "arch": result.spec.arch,
                               "params": result.spec.resolved(), "dataset": result.dataset,
                               "epochs": len(result.history.get("loss", [])), "replicas": result.replicas,
                               "test_accuracy": result.metrics["test_accuracy"],
                               "test_loss": result.metrics["test_loss"], "macro_f1": result.metrics["macro_f1"],
                               "seconds": round(result.seconds, 2), "image_cache": result.cache or None,
                               "warnings": result.warnings}, indent=2))
        for w in result.warnings:
            warn(w)
        return
    print_train_summary(result)


@click.command()
@data_options
@train_options
@click.option("--max-trials", type=int, default=10, show_default=True, help="Trials of the search.")
@click.option("--trial-epochs", type=int, default=8, show_default=True, help="Epochs per trial.")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Run trials in N worker processes on KerasTuner's chief/worker engine (0: one after another, "
                   "in this process). A killed worker is started again and its trial re-run.")
@click.option("--worker-threads", type=int, default=0,
              help="Threads per worker (default: this machine's cores shared among the workers).")
@click.option("--chief", default=None, metavar="HOST:PORT",
              help="Serve the oracle on this address so workers on other machines can join (--worker-of); "
                   "no authentication: a trusted network only.")
@click.option("--worker-of", default=None, metavar="HOST:PORT",
              help="Join the chief at HOST:PORT as one worker (same --data and options), until it has no more trials.")
@click.option("--worker-index", type=int, default=0, show_default=True,
              help="This worker's number with --worker-of (distinct across machines; trials.json names it).")
@click.option("--measure-on", default=None, metavar="TARGET",
              help="Convert every trial's model to int8 TFLite and measure it there: tflite (latency on this host, 1 "
                   "thread), tflm (arena and latency), ethos-u (Vela's estimate) or a board USER@HOST[:PORT] (the "
                   "on-device script over SSH, as bench --remote). Default: tflite when a --max-* budget is given.")
@click.option("--max-latency-ms", type=float, default=None,
              help="Budget: int8 latency on --measure-on (trials over it are penalised; the best inside is retrained).")
@click.option("--max-size-kb", type=float, default=None, help="Budget: int8 .tflite size in KiB.")
@click.option("--max-arena-kb", type=float, default=None, help="Budget: TFLite Micro arena in KiB (--measure-on tflm).")
@click.option("--json", "as_json", is_flag=True, help="Print the trials and the result as JSON (no progress lines).")
@user_errors
def tune(max_trials, trial_epochs, as_json, workers, worker_threads, chief, worker_of, worker_index, measure_on,
         max_latency_ms, max_size_kb, max_arena_kb, **o):
    """Bayesian hyperparameter search (KerasTuner), then the best configuration retrained in full."""
    o["as_json"] = as_json
    budget = None
    if measure_on or any(v is not None for v in (max_latency_ms, max_size_kb, max_arena_kb)):
        from edgecnn.tune_device import DeviceBudget

        budget = DeviceBudget(max_latency_ms=max_latency_ms, max_size_kb=max_size_kb, max_arena_kb=max_arena_kb,
                              measure_on=measure_on or "tflite")
    _run_tune(o, max_trials, trial_epochs, workers=workers, worker_threads=worker_threads, chief=chief,
              worker_of=worker_of, worker_index=worker_index, budget=budget)


@click.command("import", short_help="Make a run directory from a Keras model trained elsewhere, to export and bench.")
@click.argument("model", type=click.Path())
@click.option("--data", required=True, help="Data its test metrics are measured on: digits, an .npz or an image "
                                            "folder (the class order must be the model's).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--image-size", nargs=2, type=int, default=None, metavar="H W",
              help="Input size, when the model's is not fixed. Default: the model's.")
@click.option("--input-range", type=click.Choice(["auto", "0-1", "0-255", "-1-1"]), default="auto", show_default=True,
              help="The pixel range the model was trained on (a Rescaling layer maps edgecnn's [0, 1] to it); auto: "
                   "measured on the validation images (accuracy, then the BatchNorm statistics, then loss).")
@click.option("--orientation", type=click.Choice(["auto", "exif", "stored"]), default="auto", show_default=True,
              help="How its training read photos that carry an EXIF orientation: exif upright (OpenCV, Ultralytics, "
                   "exif_transpose), stored as stored (Keras' image_dataset_from_directory, torchvision); auto: "
                   "measured on such photos of the training and validation splits, stored when none has a tag.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split of data without a test split.")
@click.option("--precise-bn", is_flag=True,
              help="Re-measure the model's BatchNorm moving statistics on up to 1,024 training images (weights "
                   "unchanged): for a model whose statistics never settled and that predicts one class.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty run directory.")
@user_errors
def import_(model, data, out, image_size, input_range, orientation, seed, precise_bn, overwrite):
    """Make a run directory from a Keras model trained elsewhere (MODEL: a .keras or .h5 file from Keras 3 or 2,
    or a Keras 2 SavedModel directory; Sequential or functional): its input range, its output (logits, a binary
    classifier's one unit) and its preprocessing recorded, its test metrics measured, so export (PTQ, QAT or
    auto), bench, predict and the on-device script work on it."""
    from edgecnn.imported import ImportConfig, import_model

    result = import_model(ImportConfig(model=model, data=data, out=out, image_size=tuple(image_size) if image_size
                                       else None, input_range=input_range, seed=seed, precise_bn=precise_bn,
                                       overwrite=overwrite, orientation=orientation))
    for w in result.warnings:
        warn(w)
    if input_range == "auto":
        from edgecnn.imported_fit import fit_text

        click.echo(f"input range: {result.input_range} ({fit_text(result.range_fit)})")
    if result.orientation_fit:
        f = result.orientation_fit
        click.echo(f"orientation: {result.orientation} (accuracy on {f['images']} training/validation photos that "
                   f"carry an EXIF orientation: read upright {f['exif']:.3f}, as stored {f['stored']:.3f})")
    added = f" (added: {', '.join(result.wrapped)})" if result.wrapped else ""
    click.echo(f"wrote {result.run_dir}: test accuracy {result.metrics['test_accuracy']:.4f} on "
               f"{result.metrics['test_samples']} images{added}; next: edgecnn export {result.run_dir}")
