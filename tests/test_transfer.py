"""Transfer learning (issue 11): `--param weights=imagenet` reads the Keras cache and never downloads; the
frozen-base-then-fine-tune recipe (`--freeze-epochs`, `--fine-tune-at`) trains the head first and leaves the
layers below --fine-tune-at, and every BatchNorm, as they were loaded."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

SIZE = 96
NAME = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_{SIZE}_no_top.h5"


def cli(*args):
    from edgecnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _cache(home):
    """A weights file with the name Keras looks for, in the legacy .h5 layout keras.applications reads (random
    weights: the point is where they come from, not what they know)."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(7)
    base = keras.applications.MobileNetV2(alpha=0.35, input_shape=(SIZE, SIZE, 3), include_top=False, weights=None)
    (home / "models").mkdir(parents=True)
    with h5py.File(home / "models" / NAME, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in base.layers}


@pytest.mark.slow  # 26 s: two epochs of MobileNetV2 at 96x96
def test_imagenet_weights_from_the_cache_and_the_fine_tune_recipe(tmp_path, monkeypatch):
    import keras

    from edgecnn.data import DataConfig
    from edgecnn.train import TrainConfig, train

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    cached = _cache(tmp_path / "kh")
    seen = {}

    class Snapshot(keras.callbacks.Callback):  # the weights and trainable flags at the end of each epoch
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = [(layer.name, isinstance(layer, keras.layers.BatchNormalization), layer.trainable,
                            [np.array(w) for w in layer.get_weights()]) for layer in self.model.layers]

    cfg = TrainConfig(out=str(tmp_path / "run"), data=DataConfig(image_size=(SIZE, SIZE), channels=3, limit=60),
                      arch="mobilenet_v2", params={"weights": "imagenet"}, epochs=2, freeze_epochs=1,
                      fine_tune_at=100, batch_size=30)
    result = train(cfg, extra_callbacks=[Snapshot()])
    assert len(result.history["loss"]) == 2  # one frozen epoch, one fine-tuning epoch
    frozen_phase, fine_phase = seen[0], seen[1]
    assert [t for name, _, t, _ in frozen_phase if t] and all(n in ("head_dropout", "probs") for n, _, t, _ in
                                                                frozen_phase if t)  # the head alone first
    loaded = moved = 0
    for i, (name, is_bn, trainable, weights) in enumerate(fine_phase):
        if not cached.get(name):
            continue
        same = all(np.array_equal(a, b) for a, b in zip(weights, cached[name]))
        if i < 100 or is_bn:  # loaded from the cache file and never trained
            assert not trainable and same, name
            loaded += 1
        else:
            assert trainable, name
            moved += not same
    assert loaded > 50 and moved > 5
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert all(layer.trainable for layer in model.layers)  # saved as the architecture builds it


def test_missing_weights_name_the_file_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    res = cli("train", "--out", tmp_path / "run", "--arch", "mobilenet_v2", "--param", "weights=imagenet",
              "--image-size", SIZE, SIZE, "--channels", "3", "--epochs", "1")
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and NAME in line and "keras.applications.MobileNetV2" in line
    assert not (tmp_path / "run" / "config.json").exists()
    bad = cli("train", "--out", tmp_path / "r2", "--epochs", "3", "--freeze-epochs", "3")
    assert bad.exit_code == 2 and "--freeze-epochs" in bad.output
