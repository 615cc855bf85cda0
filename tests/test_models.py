"""The model factory: every architecture in Keras 3 and tf_keras, weights copied, outputs equal."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.errors import ModelError
from edgecnn.models import ARCHITECTURES, ModelSpec, build, compile_model, copy_weights

SHAPES = {
    "simple_cnn": (8, 8, 1),
    "convnet": (28, 28, 1),
    "tf_cnn": (28, 28, 1),
    "cifar_cnn": (32, 32, 3),
    "vgg_cifar": (16, 16, 3),
    "resnet8": (16, 16, 3),
    "mobilenet_v2": (32, 32, 3),
}


def test_every_architecture_is_covered():
    assert set(SHAPES) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_keras3_and_tf_keras_agree_after_weight_copy(arch):
    import tf_keras

    spec = ModelSpec(arch, SHAPES[arch], 5)
    k3 = build(spec)
    k2 = build(spec, tf_keras)
    assert len(k3.get_weights()) == len(k2.get_weights())
    # give every weight (BatchNorm statistics included) non-trivial values so the check can fail
    rng = np.random.default_rng(0)
    k3.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) + (1.0 if "variance" in v.path else 0.0)
                    for w, v in zip(k3.get_weights(), k3.weights)])
    copy_weights(k3, k2)
    x = rng.random((4, *SHAPES[arch]), dtype=np.float32)
    a, b = k3(x, training=False).numpy(), k2(x, training=False).numpy()
    assert a.shape == (4, 5)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_copy_weights_rejects_other_layout():
    with pytest.raises(ModelError, match="weight layouts differ"):
        copy_weights(build(ModelSpec("simple_cnn", (8, 8, 1), 10)), build(ModelSpec("resnet8", (8, 8, 1), 10)))


def test_too_small_and_unknown():
    with pytest.raises(ModelError, match="too small for convnet"):
        build(ModelSpec("convnet", (8, 8, 1), 10))
    with pytest.raises(ModelError, match="unknown architecture"):
        build(ModelSpec("lenet", (8, 8, 1), 10))
    with pytest.raises(ModelError, match="unknown hyperparameter"):
        build(ModelSpec("simple_cnn", (8, 8, 1), 10, {"filterz": 3}))


def test_simple_cnn_hyperparameters_change_the_model():
    small = build(ModelSpec("simple_cnn", (8, 8, 1), 10, {"filters": 16, "dense_units": 32}))
    default = build(ModelSpec("simple_cnn", (8, 8, 1), 10))
    assert small.count_params() < default.count_params()
    assert [l.name for l in default.layers][:5] == ["image", "conv1", "bn1", "act1", "pool1"]


def test_a_whole_number_for_a_float_hyperparameter_is_taken():
    """`--param learning_rate=1` parses as an int, which Keras' optimizers refused with a traceback."""
    spec = ModelSpec("simple_cnn", (8, 8, 1), 10, {"learning_rate": 1, "l2": 0, "optimizer": "sgd", "filters": 16.0})
    hp = spec.resolved()
    assert isinstance(hp["learning_rate"], float) and isinstance(hp["l2"], float) and type(hp["filters"]) is int
    model = compile_model(build(spec), spec)
    assert float(model.optimizer.learning_rate.numpy()) == 1.0
