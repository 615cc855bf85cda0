"""edgecnn.testing: the parity helpers users put in their own test suites, and the example that uses them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bench_artifacts import broken_run, exported_run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test_parity.py"


@pytest.fixture(scope="session")
def exported(digits_run, tmp_path_factory):
    return exported_run(digits_run, tmp_path_factory.mktemp("bench"))


def test_assert_parity_passes_on_a_good_export(exported):
    from edgecnn.testing import assert_parity

    result = assert_parity(exported, max_acc_drop=1.0, min_agreement=0.97)
    ran = {(r.artifact, r.backend) for r in result.rows if r.status == "ok"}
    assert {("tflite_int8", "tflite"), ("onnx_int8", "onnxruntime"), ("onnx_fp32", "onnxruntime")} <= ran
    assert all(r.latency is None for r in result.rows)  # parity only, no timing


def test_assert_parity_fails_on_a_broken_int8_artifact(exported, tmp_path):
    from edgecnn.testing import assert_parity

    bad = broken_run(exported, tmp_path / "broken")
    with pytest.raises(AssertionError, match=r"tflite_int8 on tflite \(xnnpack\): accuracy drop"):
        assert_parity(bad, max_acc_drop=1.0, backends=["tflite"])


def test_a_parity_check_that_ran_nothing_fails(exported):
    from edgecnn.testing import assert_parity, parity_failures, parity_rows

    result = parity_rows(exported, backends=["litert-gpu"])
    if any(r.status == "ok" for r in result.rows if r.backend == "litert-gpu"):
        pytest.skip("this machine has a GPU LiteRT can use")
    assert any(line.startswith("nothing ran on litert-gpu") for line in parity_failures(result, ["litert-gpu"]))
    with pytest.raises(AssertionError, match="nothing ran on litert-gpu"):
        assert_parity(exported, backends=["litert-gpu"])


def test_the_example_parity_tests_pass_on_a_good_export(exported, monkeypatch):
    spec = importlib.util.spec_from_file_location("example_test_parity", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RUN", exported)
    mod.test_tflite_keeps_accuracy("tflite_int8")
    mod.test_onnx_keeps_accuracy("onnx_int8")
    mod.test_float_artifacts_match_keras_closely()


def test_ci_workflow_runs_the_gate():
    text = (EXAMPLE.parent / "ci" / "parity.yml").read_text()
    assert "edgecnn bench" in text and "--max-acc-drop" in text and "--min-agreement" in text
    assert "runs-on:" in text and "actions/setup-python" in text


def test_the_example_fails_when_the_run_was_not_exported(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("example_test_parity", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RUN", tmp_path / "missing")
    with pytest.raises(pytest.fail.Exception, match="no exported run"):
        mod.test_tflite_keeps_accuracy("tflite_int8")


def test_chance_level_predictions_are_warned_even_when_they_vary():
    from edgecnn.contracts.parity import chance_warning, one_class_on_test

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 36)  # 360 test images, 10 balanced classes
    guess = rng.integers(0, 10, len(labels))  # varied, unlearned: about 0.10
    w = chance_warning(guess, labels, [f"c{i}" for i in range(10)], "test images")
    assert w and "no better than always answering the largest class" in w and "360 test images" in w
    learned = np.where(rng.random(len(labels)) < 0.5, labels, guess)  # about 0.55: learned, if poorly
    assert chance_warning(learned, labels, None, "test images") is None
    skewed = np.r_[np.zeros(300, int), np.ones(60, int)]  # 83% one class: always 0 is 0.83, no better
    assert chance_warning(np.r_[np.zeros(350, int), np.ones(10, int)], skewed, None, "x")
    assert chance_warning(labels[:19], labels[:19] * 0, None, "x") is None  # too few to tell
    cm = np.zeros((10, 10), int)  # a metrics.json's confusion matrix of the guesses reaches train's warnings
    np.add.at(cm, (labels, guess), 1)
    assert "no better than" in one_class_on_test({"confusion_matrix": cm.tolist()})
