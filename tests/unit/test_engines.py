"""Which engine converts a model, and when auto turns to litert, with fake children (no conversion):
onnx2tf's own route failing (a crash of the TFLite converter, an onnx2tf error, wrong float32
numbers) hands the model to litert within what is left of its timeout; a quantized file that misses
while float32 is right, a model file that cannot load, or the machine, never does."""
from __future__ import annotations

import dataclasses

import pytest

from converter import diagnosis_run, engines
from converter.checks import OutputComparison
from converter.failures import FailureKind, Stage
from converter.results import Deliverable, Divergence, Result
from converter.spec import ModelSpec


def _output(passed: bool) -> OutputComparison:
    err = 1e-7 if passed else 0.3
    return OutputComparison("y", (1, 4), (1, 4), err, err, 1.0, err, 1.0, None, 0 if passed else 4, 4, 1e-4)


def _failed(kind: FailureKind, stage: Stage, message: str, **fields) -> Result:
    return Result.failed("m", "m.pt", kind, stage, message, seconds=12.0, stage_seconds={"load": 2.0, stage.value: 10.0},
                         peak_rss_mb=700.0, **fields)


def _passed(engine: str) -> Result:
    return Result(model_id="m", model_path="m.pt", status="passed", seconds=20.0, stage_seconds={"tflite": 18.0},
                  peak_rss_mb=900.0, engine=engine)


CRASH = _failed(FailureKind.CRASH, Stage.TFLITE, "conversion process killed by SIGSEGV during tflite")
ONNX2TF_ERROR = _failed(FailureKind.SAVEDMODEL_ERROR, Stage.SAVEDMODEL, "onnx2tf: Dimensions must be equal")
WRONG_FLOAT32 = _failed(FailureKind.NUMERIC_MISMATCH, Stage.VERIFY, "float32 TFLite output 'y': off",
                        deliverables=(Deliverable("fp32", "m_fp32.tflite", 10, outputs=(_output(False),)),))
QUANTIZATION_ONLY = _failed(FailureKind.NUMERIC_MISMATCH, Stage.VERIFY, "DRQ TFLite output 'y': off",
                            deliverables=(Deliverable("drq", "m_drq.tflite", 5, outputs=(_output(False),)),
                                          Deliverable("fp32", "m_fp32.tflite", 10, outputs=(_output(True),))))
UNLOADABLE = _failed(FailureKind.LOAD_ERROR, Stage.LOAD, "not a TorchScript file")
OUT_OF_MEMORY = _failed(FailureKind.OUT_OF_MEMORY, Stage.SAVEDMODEL, "peak 4000 MB over the ceiling")


@pytest.fixture
def children(monkeypatch, tmp_path):
    """Fake children: onnx2tf's gives `calls["onnx2tf"]`, litert's a pass; each call is recorded."""
    calls: dict = {"runs": [], "litert": _passed("litert"), "diagnoses": []}

    def run_isolated(spec, artifacts, **kwargs):
        calls["runs"].append((kwargs.get("engine", "onnx2tf"), kwargs))
        return calls["litert"] if kwargs.get("engine") == "litert" else calls["onnx2tf"]

    def run_diagnosis(work, **budget):
        calls["diagnoses"].append(budget)
        if isinstance(calls.get("diagnosis"), Exception):
            raise calls["diagnosis"]
        return calls.get("diagnosis"), 1800.0

    monkeypatch.setattr(engines, "run_isolated", run_isolated)
    monkeypatch.setattr(engines, "run_diagnosis", run_diagnosis)
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    calls["python"] = python
    return calls


def _convert(children, tmp_path, onnx2tf: Result, engine: str = "auto") -> Result:
    children["onnx2tf"] = onnx2tf
    spec = ModelSpec(model_id="m", path=str(tmp_path / "m.pt"), engine=engine, timeout=100.0)
    result, _ = engines.convert(spec, tmp_path / "artifacts", litert_python=children["python"], threads=1)
    return result


@pytest.mark.parametrize("onnx2tf", [CRASH, ONNX2TF_ERROR, WRONG_FLOAT32], ids=["crash", "onnx2tf_error", "wrong_float32"])
def test_auto_hands_what_onnx2tfs_route_got_wrong_to_litert(children, tmp_path, onnx2tf):
    result = _convert(children, tmp_path, onnx2tf)
    assert result.passed and result.engine == "litert"
    (fix,) = result.fixes
    assert fix.label == "engine:litert"
    assert fix.reason == f"onnx2tf's route failed: {onnx2tf.failure.kind.value} in {onnx2tf.failure.stage}: " \
                         f"{onnx2tf.failure.message}"
    (first, kwargs), (second, litert_kwargs) = children["runs"]
    assert (first, second) == ("onnx2tf", "litert")
    assert kwargs["diagnose_later"] is True  # litert follows: onnx2tf's diagnosis waits for its outcome
    assert litert_kwargs["timeout"] == 100.0 - 12.0  # the model's timeout covers both engines
    assert result.seconds == 32.0 and result.peak_rss_mb == 900.0
    assert result.stage_seconds["load"] == 2.0 and sum(result.stage_seconds.values()) == 30.0  # both engines' stages


@pytest.mark.parametrize("onnx2tf", [QUANTIZATION_ONLY, UNLOADABLE, OUT_OF_MEMORY],
                         ids=["quantization_only", "unloadable", "out_of_memory"])
def test_auto_keeps_failures_no_other_engine_mends(children, tmp_path, onnx2tf):
    result = _convert(children, tmp_path, onnx2tf)
    assert result == onnx2tf and [engine for engine, _ in children["runs"]] == ["onnx2tf"]


def test_a_named_engine_runs_alone(children, tmp_path):
    assert _convert(children, tmp_path, CRASH, engine="onnx2tf") == CRASH
    assert children["runs"][0][1]["diagnose_later"] is False  # nothing follows: the child diagnoses at once
    children["runs"].clear()
    assert _convert(children, tmp_path, CRASH, engine="litert").engine == "litert"
    assert [engine for engine, _ in children["runs"]] == ["litert"]


def test_without_the_litert_environment_auto_diagnoses_at_once(children, tmp_path):
    children["python"].unlink()
    result = _convert(children, tmp_path, WRONG_FLOAT32)
    assert children["runs"][0][1]["diagnose_later"] is False
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH  # onnx2tf's failure, and why litert could not run
    assert "; engine litert failed too: engine_missing in load: engine litert not installed" in result.failure.message


def test_no_time_left_means_no_second_engine(children, tmp_path):
    spent = dataclasses.replace(CRASH, seconds=99.5)
    assert _convert(children, tmp_path, spent) == spent and len(children["runs"]) == 1


def _left_for_later(tmp_path):
    """What onnx2tf's child leaves when it prepares a diagnosis and does not run it."""
    work = tmp_path / "artifacts" / diagnosis_run.FOLDER
    work.mkdir(parents=True)
    (work / diagnosis_run.JOB).write_text('{"tolerance": 0.0001}')
    return work


FOUND = Divergence("onnx2tf", None, 1e-4, 40, "node_errors.md", tf_error=0.39, seconds=21.0)
LITERT_REFUSES = _failed(FailureKind.TFLITE_ERROR, Stage.TFLITE, "litert-torch could not convert the model: aten.foo")


def test_when_litert_fails_too_onnx2tfs_wrong_numbers_are_diagnosed_then(children, tmp_path):
    work = _left_for_later(tmp_path)
    children["litert"], children["diagnosis"] = LITERT_REFUSES, FOUND
    result = _convert(children, tmp_path, WRONG_FLOAT32)
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH and result.divergence == FOUND
    message = result.failure.message
    said = [message.find(part) for part in ("float32 TFLite output 'y': off", "; engine litert failed too: tflite_error",
                                            "; " + FOUND.describe())]
    assert -1 < said[0] < said[1] < said[2], message  # litert's failure before the diagnosis, which a long line cuts
    (budget,) = children["diagnoses"]
    # the time the child would have given it, less what both engines spent (12 s and 12 s) and a margin
    assert budget["seconds"] == pytest.approx(min(0.25 * 100.0, 100.0 - 24.0 - 10)) and budget["threads"] == 1
    assert result.seconds == 12.0 + 12.0 + 21.0 and result.peak_rss_mb == 1800.0  # the diagnosis counted too
    assert work.is_dir()


def test_a_diagnosis_that_fails_leaves_the_failure_it_was_to_explain(children, tmp_path):
    _left_for_later(tmp_path)
    children["litert"], children["diagnosis"] = LITERT_REFUSES, OSError("no space left on device")
    result = _convert(children, tmp_path, WRONG_FLOAT32)
    assert result.failure.kind is FailureKind.NUMERIC_MISMATCH and result.divergence is None
    assert result.failure.message.endswith("litert-torch could not convert the model: aten.foo")


def test_a_diagnosis_left_for_later_is_dropped_when_no_wrong_numbers_are_to_explain(children, tmp_path):
    work = _left_for_later(tmp_path)  # the child was stopped after preparing it
    timed_out = _failed(FailureKind.TIMEOUT, Stage.SAVEDMODEL, "no result after the 100 s timeout")
    assert _convert(children, tmp_path, timed_out, engine="onnx2tf") == timed_out
    assert not children["diagnoses"] and not work.exists()
    work = _left_for_later(tmp_path)  # litert delivered the model: nobody reads it
    assert _convert(children, tmp_path, WRONG_FLOAT32).passed and not children["diagnoses"] and not work.exists()


def test_when_litert_cannot_finish_that_is_the_verdict_and_a_rerun_tries_again(children, tmp_path):
    work = _left_for_later(tmp_path)
    children["litert"] = _failed(FailureKind.TIMEOUT, Stage.TFLITE, "no result after the 88 s timeout (still in tflite)")
    result = _convert(children, tmp_path, WRONG_FLOAT32)
    assert result.failure.kind is FailureKind.TIMEOUT and not result.failure.kind.cached  # not restored next time
    assert result.failure.message.startswith("engine litert: no result after the 88 s timeout (still in tflite); "
                                             "onnx2tf's route had failed first: numeric_mismatch in verify: ")
    assert result.seconds == 24.0 and not children["diagnoses"] and not work.exists()
