"""BatchNorm statistics that belong to the weights they are used with ("precise BN").

Keras keeps each BatchNorm layer's inference statistics as a moving average (momentum 0.9 here) of the
batches training has seen. On a small training split the average never forgets its start: an 80-image
folder gives 3 steps an epoch, and after one epoch the moving mean is still 73% its initial 0. Validation
then judges weights with statistics that are not theirs, val_loss is lowest at epoch 0 and grows while
training accuracy reaches 1.0, early stopping restores epoch 0, and the model predicts one class (measured:
validation accuracy 1.0 with batch statistics, 0.31 with the moving ones).

`settle(model, images, batch_size)` sets every trainable BatchNorm layer's moving mean and variance to the
average of its batch statistics over `images`, with the weights as they are (as fvcore's PreciseBN and
Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021). `PreciseBatchNorm` does that before each epoch's
validation, on a fixed sample of the training split (un-augmented), so validation figures, early stopping,
the best weights kept and the saved model all see statistics measured for their weights.
"""
from __future__ import annotations

import numpy as np

SAMPLE_IMAGES = 1024  # images whose batch statistics are averaged (at most SAMPLE_BYTES of float32)
SAMPLE_BYTES = 256 * 2 ** 20


def batchnorm_layers(model) -> list:
    """Every BatchNorm layer of `model`, nested models included, that training updates (trainable)."""
    import keras

    from edgecnn.models import all_layers

    return [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable and not getattr(layer, "renorm", False)]


class Snapshot:
    """BatchNorm `layers`' moving statistics as they are now, to put back later (`restore`)."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.values = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in self.layers]

    def restore(self) -> None:
        for layer, (mean, var) in zip(self.layers, self.values):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)


class Settler:
    """Settles one model's trainable BatchNorm layers; the forward pass is traced once and reused."""

    def __init__(self, model):
        self.model, self.layers, self._statistics = model, batchnorm_layers(model), None

    def __call__(self, images: np.ndarray, batch_size: int) -> int:
        """Replace the moving statistics by the mean of the batch statistics over `images` (forward passes in
        training mode, whole batches of `batch_size` or one batch of all when fewer; no weight changes).
        Returns the number of layers settled (0 when the model has none or `images` is empty)."""
        if not self.layers or len(images) == 0:
            return 0
        import tensorflow as tf

        size = min(batch_size, len(images))
        momenta = [layer.momentum for layer in self.layers]
        sums = None
        try:
            for layer in self.layers:
                layer.momentum = 0.0  # a call leaves exactly its batch's statistics in the moving variables
            if self._statistics is None:  # traced with momentum 0, once: eager calls cost more than an epoch
                self._statistics = tf.function(self._batch_statistics)
            for start in range(0, len(images) - size + 1, size):  # whole batches: one shape, one trace
                batch = tf.constant(images[start:start + size])
                stats = [v.numpy().astype(np.float64) for v in self._statistics(batch)]
                sums = stats if sums is None else [total + v for total, v in zip(sums, stats)]
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
        batches = len(images) // size
        for i, layer in enumerate(self.layers):
            layer.moving_mean.assign((sums[2 * i] / batches).astype(np.float32))
            layer.moving_variance.assign((sums[2 * i + 1] / batches).astype(np.float32))
        return len(self.layers)

    def _batch_statistics(self, x):
        import tensorflow as tf

        self.model(x, training=True)
        return [tf.identity(v.value) for layer in self.layers for v in (layer.moving_mean, layer.moving_variance)]


def settle(model, images: np.ndarray, batch_size: int) -> int:
    """Set `model`'s trainable BatchNorm moving statistics to the mean of their batch statistics over `images`
    (see `Settler`). Returns the number of layers settled."""
    return Settler(model)(images, batch_size)


def sample(split, seed: int) -> np.ndarray:
    """A fixed random sample of a training split's preprocessed images: SAMPLE_IMAGES, fewer when their
    float32 form would exceed SAMPLE_BYTES or the split is smaller."""
    per_image = int(np.prod(split.shape[1:])) * 4
    n = max(1, min(len(split), SAMPLE_IMAGES, SAMPLE_BYTES // per_image))
    positions = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    return split[positions]


def callback(split, seed: int, batch_size: int):
    """A Keras callback that settles the BatchNorm statistics before each epoch's validation, on `sample(split,
    seed)` (drawn when first needed: never for a model without BatchNorm). Tuning's trials share one."""
    import keras

    class PreciseBatchNorm(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._due, self._settler, self._images = False, None, None

        def on_epoch_begin(self, epoch, logs=None):
            self._due = True

        def on_test_begin(self, logs=None):  # inside fit, validation runs after the epoch's last step
            if not self._due:
                return
            self._due = False
            if self._settler is None or self._settler.model is not self.model \
                    or self._settler.layers != batchnorm_layers(self.model):  # a trial's model; layers unfrozen
                self._settler = Settler(self.model)
            if self._settler.layers:
                if self._images is None:
                    self._images = sample(split, seed)
                self._settler(self._images, batch_size)

    return PreciseBatchNorm()
