"""Metrics compiled in beside accuracy: the balanced accuracy a run with balanced class weights logs, and a
search on imbalanced data maximises."""
from __future__ import annotations

BALANCED_ACCURACY = "val_balanced_accuracy"  # its name in the epoch logs: the mean per-class recall on validation


def balanced_accuracy_metric(num_classes: int):
    """A Keras 3 metric, `balanced_accuracy` (`val_balanced_accuracy` on validation): the mean recall over the
    classes seen, accumulated per class in the same pass as the other metrics (unweighted: class weights weigh the
    loss, not what it measures). Early stopping keeps following the plain validation loss: a validation loss
    weighted towards a rare class of a few validation images is noise (README, Training). Compiled in for fitting
    only (`compile_model(balanced=True)`): a saved model is compiled without it, so loading one needs no
    edgecnn class."""
    import keras
    from keras import ops

    class BalancedAccuracy(keras.metrics.Metric):
        def __init__(self, num_classes: int, name: str = "balanced_accuracy", **kwargs):
            super().__init__(name=name, **kwargs)
            self.num_classes = num_classes
            self.correct = self.add_variable(shape=(num_classes,), initializer="zeros", name="correct")
            self.total = self.add_variable(shape=(num_classes,), initializer="zeros", name="total")

        def update_state(self, y_true, y_pred, sample_weight=None):
            y = ops.reshape(ops.cast(y_true, "int32"), (-1,))
            hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y), self.dtype)
            onehot = ops.one_hot(y, self.num_classes, dtype=self.dtype)
            self.total.assign_add(ops.sum(onehot, axis=0))
            self.correct.assign_add(ops.sum(onehot * ops.expand_dims(hit, -1), axis=0))

        def result(self):
            seen = ops.sum(ops.cast(self.total > 0, self.dtype))
            return ops.sum(ops.divide_no_nan(self.correct, self.total)) / ops.maximum(seen, 1.0)

        def reset_state(self):
            for v in (self.correct, self.total):
                v.assign(ops.zeros_like(v))

        def get_config(self):
            return {**super().get_config(), "num_classes": self.num_classes}

    return BalancedAccuracy(num_classes)
