"""The checkpoint the child's steps pass on, and the hand-over that writes it (checkpoint.py,
handover.py, protocol.SampleArrays)."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np

from converter.failures import FailureKind
from converter.protocol import Job, Progress, SampleArrays
from converter.results import (
    Caveat,
    Deliverable,
    Divergence,
    ExportResult,
    Fix,
    GraphResult,
    LayerError,
    LiteRTResult,
    LoadResult,
    NodeError,
    Repair,
    TFLiteResult,
    VerifyResult,
)
from converter.spec import InputSpec
from converter.stages import checkpoint, handover
from converter.stages.checkpoint import JOB_SETTINGS, Attempt, BuiltSavedModel, Checkpoint, Context, Problem

from ..support import comparison, saved_model


def _full_checkpoint() -> Checkpoint:
    """A checkpoint with every written field away from its default (a new field must be added here)."""
    fix = Fix("pseudo_ops", "erf", "the graph has Erf")
    node = NodeError("n1", "Mul", "y", (1, 4), 0.5, 2.0, 0.25, True)
    return Checkpoint(
        model_sha256="ab" * 32, inputs=(InputSpec("x", (1, 4), "float32", (0.0, 1.0)),), output_names=("out",),
        flatten=True, load=LoadResult("torchscript", 0.5, ("x",), ((1, 4),), (Caveat("out", 1e-4, 2.0, "moves little"),),
                                      "ab" * 32),
        export=ExportResult("legacy", 17, "/a/model.onnx", 1234, ((1, 4),), ("legacy: ok",), (comparison(),), 0.2, (fix,)),
        graph=GraphResult(10, 8, 0.3, True, None), graph_fixes=(fix,),
        built=BuiltSavedModel("simplified", saved_model(), ("erf",), (fix,)),
        attempts=(Attempt("simplified", 1, FailureKind.NUMERIC_MISMATCH, "savedmodel", "off", saved_model("simplified")),),
        onnx2tf_runs=2, savedmodel=saved_model(),
        litert=LiteRTResult("TorchScript via TS2EPConverter", (("x", "args_0"),), ((0, 1),), (("y", "output_0"),),
                            ((0, 1),), 2.5),
        tflite=TFLiteResult(("FlexErf",), 0.4, "8 samples", True),
        deliverables=(Deliverable("drq", "/a/model_drq_selective.tflite", 99, (comparison(),),
                                  layers=(LayerError("dense/MatMul", "FULLY_CONNECTED", 2.5, 2.0, True),),
                                  repair=Repair(("dense/MatMul",), 0.9, 90, "missed", 1, True)),),
        verify=VerifyResult(True, "", 0.3), float32=Deliverable("fp32", "/a/model_fp32.tflite", 360, (comparison(),)),
        delivered="drq", fixes=(fix,),
        divergence=Divergence("onnx2tf", node, 1e-4, 12, "/a/t.csv", 0.3, "n0", "time", 1.0, float("inf")),
        problem=Problem(FailureKind.NUMERIC_MISMATCH, "off", "tflite", "drq"), calibration_note="8 samples",
        random_calibration=True, steps_done=("read", "load", "export"),
        samples=SampleArrays(inputs=(np.ones((1, 4), np.float32),), reference=(np.zeros((1, 4), np.float32),),
                             onnx=(np.full((1, 4), 2, np.float32),), tf=(np.full((1, 4), 3, np.float32),),
                             verify_sets=(((np.ones((1, 4)),), (np.ones((1, 4)) * 5,)),),
                             calibration_sets=((np.ones((1, 4)) * 7,),)))


def test_every_checkpoint_field_survives_the_hand_over(tmp_path):
    cp = _full_checkpoint()
    defaults = Checkpoint()
    transient = {f.name for f in dataclasses.fields(Checkpoint) if f.metadata.get("transient")}
    assert transient == {"samples", "model_bytes", "loaded"}  # runtime handles: a new one is declared on purpose
    for f in dataclasses.fields(Checkpoint):
        if f.name not in ("model_bytes", "loaded"):
            assert getattr(cp, f.name) != getattr(defaults, f.name) or f.name == "samples", f.name
    checkpoint.save(cp, tmp_path / "state.json", tmp_path / "arrays.npz", started=12.5)
    back, extra = checkpoint.load(tmp_path / "state.json", tmp_path / "arrays.npz")
    assert extra == {"started": 12.5}
    for f in dataclasses.fields(Checkpoint):
        if f.name != "samples" and f.name not in transient:
            assert getattr(back, f.name) == getattr(cp, f.name), f.name
    assert back.divergence.float64_error == float("inf")  # strict JSON carries no inf: it crossed as a string
    for name in ("inputs", "reference", "onnx", "tf"):
        assert all(np.array_equal(a, b) for a, b in zip(getattr(back.samples, name), getattr(cp.samples, name), strict=True))
    assert np.array_equal(back.samples.verify_sets[0][1][0], cp.samples.verify_sets[0][1][0])
    assert np.array_equal(back.samples.calibration_sets[0][0], cp.samples.calibration_sets[0][0])


def test_every_field_of_every_carried_dataclass_is_typed_for_the_rebuild():
    """protocol.build rebuilds by type hints: a field hinted `object` would come back as a dict."""
    for cls in (Checkpoint, Attempt, Problem, BuiltSavedModel):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.metadata.get("transient"):
                assert hints[f.name] is not object, (cls.__name__, f.name)


def test_the_samples_spelling_reads_what_earlier_versions_wrote():
    """The cache keeps entries across versions: `input_0`, `verify_0_input_0`, ... stay the spelling."""
    arrays = {"input_0": np.ones(2), "reference_0": np.zeros(2), "tf_0": np.ones(3), "verify_0_input_0": np.ones(4),
              "verify_0_reference_0": np.ones(5), "verify_1_input_0": np.ones(6), "verify_1_reference_0": np.ones(7)}
    samples = SampleArrays.from_arrays(arrays)
    assert [a.size for a in samples.inputs + samples.reference + samples.tf] == [2, 2, 3] and samples.onnx == ()
    assert [(i[0].size, r[0].size) for i, r in samples.sets] == [(4, 5), (6, 7)]
    assert set(samples.to_arrays()) == set(arrays)
    seeded = SampleArrays(inputs=(np.ones(1),), reference=(np.ones(1),))
    assert seeded.sets == ((seeded.inputs, seeded.reference),)


def test_a_hand_over_before_tflite_pays_only_for_a_large_savedmodel(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    (small / "variables.data").write_bytes(b"\0" * 1024)
    large = tmp_path / "large"
    large.mkdir()
    with open(large / "variables.data", "wb") as f:  # sparse: the size is what counts, not the blocks
        f.truncate(int(handover.TFLITE_HAND_OVER_MB * 2**20) + 1)

    def withsaved_model(path: Path) -> Checkpoint:
        return Checkpoint(built=BuiltSavedModel("simplified", dataclasses.replace(saved_model(), path=str(path)), (), ()))
    assert handover.worth_it(withsaved_model(small), "tflite") is None
    assert "TFLite conversion of its 64 MB SavedModel" in handover.worth_it(withsaved_model(large), "tflite")
    assert handover.worth_it(Checkpoint(), "prepare") == "TensorFlow's stages, without torch"


def test_every_setting_a_job_carries_reaches_the_steps_context_with_its_default(tmp_path):
    """A setting the parent puts in the job is one field of Job and one of Context, passed by name
    (Context.of): one the steps never see, or a different default on either side, fails here."""
    job_fields = {f.name: f.default for f in dataclasses.fields(Job)}
    context_fields = {f.name: f.default for f in dataclasses.fields(Context)}
    assert set(job_fields) - set(JOB_SETTINGS) == {"spec", "artifacts_dir", "guardians"}
    for name in JOB_SETTINGS:
        assert name in context_fields and job_fields[name] == context_fields[name], name
    job = Job(spec={"model_id": "m", "path": str(tmp_path / "m.pt")}, artifacts_dir=str(tmp_path), threads=3,
              guardians=[], memory_limit_mb=512.0, diagnosis_share=0.1, fail_on_vacuous=True, engine="litert",
              diagnose_later=True)
    ctx = Context.of(job, Progress(tmp_path / "progress.json"), started=1.0)
    assert {name: getattr(ctx, name) for name in JOB_SETTINGS} == {name: getattr(job, name) for name in JOB_SETTINGS}
    assert ctx.spec.model_id == "m" and ctx.artifacts == tmp_path and ctx.hand_over is None
