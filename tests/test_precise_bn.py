"""BatchNorm statistics measured for the weights they serve (edgecnn.precise_bn)."""
from __future__ import annotations

import numpy as np

from conftest import make_npz
from edgecnn.data import DataConfig
from edgecnn.train import TrainConfig, train


def _model():
    import keras

    inputs = keras.Input((4, 4, 2))
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn_in")(inputs)
    x = keras.layers.Conv2D(3, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn_frozen")(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("bn_frozen").trainable = False
    return model


def test_settle_sets_the_mean_of_batch_statistics_and_leaves_the_rest():
    from edgecnn.precise_bn import Settler

    model = _model()
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(10, 4, 4, 2)) * [1.0, 3.0] + [5.0, -2.0]).astype(np.float32)
    frozen = model.get_layer("bn_frozen")
    before = [w.copy() for w in frozen.get_weights()]
    weights = model.get_layer("conv").get_weights()[0].copy()

    settler = Settler(model)
    assert [layer.name for layer in settler.layers] == ["bn_in"]  # the frozen layer keeps its statistics
    assert settler(images, batch_size=4) == 1  # two whole batches of 4; the remainder of 2 is left out
    batches = [images[:4], images[4:8]]
    want_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    want_var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    bn = model.get_layer("bn_in")
    np.testing.assert_allclose(bn.moving_mean.numpy(), want_mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_var, rtol=1e-5)
    assert bn.momentum == 0.9  # restored
    for w, b in zip(frozen.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    np.testing.assert_array_equal(model.get_layer("conv").get_weights()[0], weights)

    # fewer images than a batch: one batch of all of them; a second call reuses the traced pass
    assert settler(images[:3], batch_size=4) == 1
    np.testing.assert_allclose(bn.moving_mean.numpy(), images[:3].mean(axis=(0, 1, 2)), rtol=1e-5)


def test_a_small_training_split_learns_with_precise_batchnorm(tmp_path):
    """80 images (64 training, 2 steps an epoch): Keras' moving averages stay near their start, validation judges
    the weights with statistics that are not theirs, early stopping keeps epoch 0, and the model predicts one class
    (measured: test accuracy 0.40). With the statistics re-measured before each validation it learns."""
    data = DataConfig(source=str(make_npz(tmp_path / "small.npz", n_train=80, n_test=30)))
    runs = {flag: train(TrainConfig(out=str(tmp_path / str(flag)), data=data, epochs=15, precise_bn=flag))
            for flag in (False, True)}
    assert runs[True].metrics["test_accuracy"] == 1.0
    assert runs[False].metrics["test_accuracy"] < 0.7  # the case above, still Keras' behaviour when turned off
    assert runs[True].warnings == []

    # the saved model holds the statistics measured for its own weights: measuring them again changes nothing
    import keras

    from edgecnn.data import load_dataset
    from edgecnn.precise_bn import Settler, batchnorm_layers, sample

    model = keras.models.load_model(tmp_path / "True" / "model.keras")
    saved = [layer.moving_variance.numpy().copy() for layer in batchnorm_layers(model)]
    assert Settler(model)(sample(load_dataset(data).train, seed=0), batch_size=32) == 3
    for before, layer in zip(saved, batchnorm_layers(model)):
        np.testing.assert_allclose(layer.moving_variance.numpy(), before, rtol=1e-6)
