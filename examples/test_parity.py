"""Accuracy-parity tests for your exported models: copy this file into your project's tests/.

It fails when an exported artifact (int8 or float TFLite, ONNX) drifts from the trained Keras model:
accuracy more than MAX_ACC_DROP points below it, or top-1 agreement under MIN_AGREEMENT. Point it at
your run directory with EDGECNN_RUN (default runs/digits), after `edgecnn train` and `edgecnn export`:

    edgecnn train --out runs/digits && edgecnn export runs/digits
    EDGECNN_RUN=runs/digits pytest test_parity.py
"""
import os
from pathlib import Path

import pytest

from edgecnn.testing import assert_parity

RUN = Path(os.environ.get("EDGECNN_RUN", "runs/digits"))
MAX_ACC_DROP = float(os.environ.get("EDGECNN_MAX_ACC_DROP", "0.5"))  # points (percent)
MIN_AGREEMENT = float(os.environ.get("EDGECNN_MIN_AGREEMENT", "0.98"))  # fraction of test images


def exported_run() -> Path:
    """The run under test; a missing export fails (a parity gate that skips would pass a broken pipeline)."""
    if not (RUN / "export" / "manifest.json").is_file():
        pytest.fail(f"no exported run at {RUN}: run `edgecnn train --out {RUN} && edgecnn export {RUN}` first, "
                    "or set EDGECNN_RUN")
    return RUN


@pytest.mark.parametrize("artifact", ["tflite_int8", "tflite_fp32"])
def test_tflite_keeps_accuracy(artifact):
    assert_parity(exported_run(), artifacts=[artifact], backends=["tflite"], max_acc_drop=MAX_ACC_DROP,
                  min_agreement=MIN_AGREEMENT)


@pytest.mark.parametrize("artifact", ["onnx_int8", "onnx_fp32"])
def test_onnx_keeps_accuracy(artifact):
    assert_parity(exported_run(), artifacts=[artifact], backends=["onnxruntime"], max_acc_drop=MAX_ACC_DROP,
                  min_agreement=MIN_AGREEMENT)


def test_float_artifacts_match_keras_closely():
    assert_parity(exported_run(), artifacts=["tflite_fp32", "onnx_fp32"], backends=["tflite", "onnxruntime"],
                  max_acc_drop=0.0, min_agreement=1.0, max_abs_diff=1e-4)
