"""keras: the reference, the trained Keras model itself (TensorFlow, CPU or GPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecnn.contracts.manifest import tensor_info
from edgecnn.errors import ModelError
from edgecnn.runtimes.base import Runtime, Session, Unavailable, images_per_batch, single_io


class KerasSession(Session):
    includes_copies = True  # predict_on_batch returns a NumPy array: the copy out is inside the timing

    def __init__(self, path: Path, opts=None, variant: str = ""):
        from edgecnn.native import quiet_tensorflow

        try:
            quiet_tensorflow()
            import keras
            import tensorflow as tf
        except ImportError as e:
            raise Unavailable(f"the keras runtime needs TensorFlow and Keras ({e}): pip install tensorflow") from None
        try:
            self.model = keras.models.load_model(str(path), compile=False)
        except Exception as e:  # a file that is not a .keras zip, or a layer Keras does not know
            raise ModelError(f"{path}: not a Keras model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
                from None
        single_io(len(self.model.inputs), len(self.model.outputs))
        self.inputs = [tensor_info(t.name, t.shape, t.dtype) for t in self.model.inputs]
        self.outputs = [tensor_info(layer.name, t.shape, t.dtype)
                        for t, layer in zip(self.model.outputs, self.model.layers[-1:])]
        self.runtime = f"keras {keras.__version__} (tensorflow {tf.__version__})"
        self.accelerator = "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or None
        if self.threads is None:
            self.note = "TensorFlow's default thread pool (--threads does not apply to the keras row)"

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=images_per_batch(x.shape[1:], 256), verbose=0),
                          dtype=np.float32)

    def runner(self, x: np.ndarray):
        model = self.model
        return lambda: model.predict_on_batch(x)

    def close(self) -> None:
        self.model = None


def _prepare() -> None:
    import keras  # noqa: F401  (TensorFlow's start-up is not the model's load time)


RUNTIME = Runtime("keras", ("keras",), KerasSession, "the trained Keras model (reference)", prepare=_prepare,
                  install="pip install tensorflow")
