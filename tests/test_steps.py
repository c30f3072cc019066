"""The child's table of steps, onnx2tf's mode ladder, the Flex pass and the hand-over's checkpoint,
with fake steps and attempts: no conversion runs here."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import numpy as np
import pytest

from converter.failures import ConversionError, FailureKind, Stage
from converter.protocol import Progress, SampleArrays
from converter.results import (
    Caveat,
    Deliverable,
    Divergence,
    ExportResult,
    Fix,
    GraphResult,
    LoadResult,
    NodeError,
    OutputComparison,
    SavedModelResult,
    TFLiteResult,
    VerifyResult,
)
from converter.spec import InputSpec, ModelSpec
from converter.stages import checkpoint, handover, pipeline
from converter.stages.checkpoint import Attempt, BuiltSavedModel, Checkpoint, Context, Problem
from converter.stages.onnx2tf_steps import Converted, failure_of, flex_pass, ladder, mode_fixes


def _comparison(name="out") -> OutputComparison:
    return OutputComparison(name, (1, 4), (1, 4), 1e-7, 1e-8, 2.0, 5e-8, 1.0, 1.0, 0, 4, 1e-4, p99_rel_err=4e-8)


def _saved(mode="strict") -> SavedModelResult:
    return SavedModelResult("/a/saved_model", "nchw", (("x", "input_x"),), ((0, 1),), (("out", "output_out"),), 1.5,
                            ("erf",), mode, "/a/model_prepared.onnx", GraphResult(10, 8, 0.3, True, "square"),
                            (_comparison(),), ((0, 1),))


def _full_checkpoint() -> Checkpoint:
    """A checkpoint with every written field away from its default (a new field must be added here)."""
    fix = Fix("pseudo_ops", "erf", "the graph has Erf")
    node = NodeError("n1", "Mul", "y", (1, 4), 0.5, 2.0, 0.25, True)
    return Checkpoint(
        model_sha256="ab" * 32, inputs=(InputSpec("x", (1, 4), "float32", (0.0, 1.0)),), output_names=("out",),
        flatten=True, load=LoadResult("torchscript", 0.5, ("x",), ((1, 4),), (Caveat("out", 1e-4, 2.0, "moves little"),),
                                      "ab" * 32),
        export=ExportResult("legacy", 17, "/a/model.onnx", 1234, ((1, 4),), ("legacy: ok",), (_comparison(),), 0.2, (fix,)),
        graph=GraphResult(10, 8, 0.3, True, None), graph_fixes=(fix,),
        built=BuiltSavedModel("simplified", _saved(), ("erf",), (fix,)),
        attempts=(Attempt("simplified", 1, FailureKind.NUMERIC_MISMATCH, "savedmodel", "off", _saved("simplified")),),
        onnx2tf_runs=2, savedmodel=_saved(), tflite=TFLiteResult(("FlexErf",), 0.4, "8 samples", True),
        deliverables=(Deliverable("drq", "/a/model_drq.tflite", 99, (_comparison(),)),),
        verify=VerifyResult(True, "", 0.3), delivered="drq", fixes=(fix,),
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


def _failing(mode, kind, stage="savedmodel", message="boom; details"):
    return Attempt(mode, 1, kind, stage, message, saved=_saved(mode) if kind.wrong_numbers else None)


def _run_ladder(outcomes: dict, first="simplified", retry=True):
    seen = []

    def attempt(mode, earlier):
        seen.append((mode, len(earlier)))
        return outcomes[mode]
    return ladder(first, attempt, retry=retry), seen


def test_the_ladder_stops_at_the_first_mode_that_converts():
    attempts, seen = _run_ladder({"simplified": Attempt("simplified", 1)})
    assert seen == [("simplified", 0)] and mode_fixes(attempts) == ()


def test_wrong_numbers_go_to_strict_mode_and_no_further():
    wrong = _failing("simplified", FailureKind.NUMERIC_MISMATCH, message="TF model off 0.3")
    attempts, seen = _run_ladder({"simplified": wrong, "strict": Attempt("strict", 1)})
    assert seen == [("simplified", 0), ("strict", 1)]
    (fix,) = mode_fixes(attempts)
    assert fix.label == "onnx2tf_mode:strict" and "differed from ONNX's" in fix.reason
    # wrong in strict mode too: defaults would only change what fails, so the first problem stays
    attempts, seen = _run_ladder({"simplified": wrong, "strict": _failing("strict", FailureKind.NUMERIC_MISMATCH)})
    assert [m for m, _ in seen] == ["simplified", "strict"]
    final = failure_of(attempts)
    assert final.kind is FailureKind.NUMERIC_MISMATCH and final.message == "TF model off 0.3 (also in onnx2tf's strict mode)"
    assert final.saved.onnx2tf_mode == "strict"  # the latest TF model is the one diagnosed


def test_a_failed_conversion_walks_every_mode_and_records_each_change():
    outcomes = {"simplified": _failing("simplified", FailureKind.SAVEDMODEL_ERROR, message="ValueError: 4 is not in list"),
                "strict": _failing("strict", FailureKind.TFLITE_ERROR, stage="tflite", message="converter says no"),
                "defaults": Attempt("defaults", 1)}
    attempts, seen = _run_ladder(outcomes)
    assert seen == [("simplified", 0), ("strict", 1), ("defaults", 2)]
    assert [f.label for f in mode_fixes(attempts)] == ["onnx2tf_mode:defaults", "onnx2tf_mode:strict"]  # latest first
    assert mode_fixes(attempts)[0].reason == "in onnx2tf's strict mode tflite failed: converter says no"
    outcomes["defaults"] = _failing("defaults", FailureKind.SAVEDMODEL_ERROR, message="last words")
    assert failure_of(_run_ladder(outcomes)[0]).message == "last words"  # its error is the one onnx2tf gives


def test_wrong_numbers_then_a_failure_say_both():
    outcomes = {"simplified": _failing("simplified", FailureKind.NUMERIC_MISMATCH, message="off 0.3"),
                "strict": _failing("strict", FailureKind.SAVEDMODEL_ERROR, message="ValueError: no; more"),
                "defaults": _failing("defaults", FailureKind.SAVEDMODEL_ERROR, message="ValueError: still no")}
    attempts, _ = _run_ladder(outcomes)
    assert len(attempts) == 3
    final = failure_of(attempts)
    assert final.kind is FailureKind.NUMERIC_MISMATCH
    assert final.message == "off 0.3 (and it failed: ValueError: still no in onnx2tf's strict mode)"
    assert final.saved.onnx2tf_mode == "simplified"


@pytest.mark.parametrize("kind", [k for k in FailureKind if not k.retried])
def test_what_no_mode_causes_is_not_retried(kind):
    attempts, seen = _run_ladder({"simplified": _failing("simplified", kind)})
    assert len(seen) == 1 and failure_of(attempts).kind is kind


def test_without_auto_fixes_or_past_the_last_mode_there_is_no_retry():
    bad = {"simplified": _failing("simplified", FailureKind.SAVEDMODEL_ERROR),
           "defaults": _failing("defaults", FailureKind.SAVEDMODEL_ERROR)}
    assert len(_run_ladder(bad, retry=False)[1]) == 1
    assert len(_run_ladder(bad, first="defaults")[1]) == 1


def _flex_fakes(names_by_pass):
    """A converter that needs Flex for the ops listed for each pass (what stays unreplaced)."""
    builds = []

    def build(fixes):
        builds.append(tuple(f.detail for f in fixes))
        return BuiltSavedModel("simplified", _saved(), tuple(f.detail for f in fixes), fixes)

    conversions = []

    def tflite(built):
        conversions.append(built)
        needed = [op for op in names_by_pass[len(conversions) - 1] if op.lower() not in built.pseudo_ops]
        if needed:
            raise ConversionError(FailureKind.FLEX_OPS, f"needs {needed}", ops=tuple(needed))
        return TFLiteResult((), 0.1), ()
    return builds, build, tflite


def test_the_flex_pass_replaces_what_the_converter_names_in_one_more_build():
    builds, build, tflite = _flex_fakes({0: ["Erf", "Asin"], 1: []})
    done = flex_pass(None, build, tflite, fixes=(), auto=True)
    assert isinstance(done, Converted) and builds == [(), ("asin", "erf")]
    assert [f.label for f in done.fixes] == ["pseudo_ops:asin", "pseudo_ops:erf"]
    assert all("the TFLite converter needs Flex" in f.reason for f in done.fixes)


def test_the_flex_pass_gives_up_on_ops_it_cannot_replace_or_when_told_not_to():
    builds, build, tflite = _flex_fakes({0: ["Erf", "Einsum"], 1: ["Erf", "Einsum"]})
    with pytest.raises(ConversionError, match="Einsum") as raised:
        flex_pass(None, build, tflite, fixes=(), auto=True)
    assert raised.value.kind is FailureKind.FLEX_OPS and builds == [(), ("erf",)]  # Erf replaced, Einsum has no fix
    builds, build, tflite = _flex_fakes({0: ["Erf"]})
    with pytest.raises(ConversionError):
        flex_pass(None, build, tflite, fixes=(), auto=False)
    assert builds == [()]


def test_the_flex_pass_starts_from_a_built_savedmodel_and_returns_a_failed_check():
    builds, build, tflite = _flex_fakes({0: []})
    built = BuiltSavedModel("strict", _saved(), ("erf",), (Fix("pseudo_ops", "erf", "graph"),))
    done = flex_pass(built, build, tflite, fixes=built.pseudo_fixes, auto=True)
    assert builds == [] and done.built is built and done.fixes == built.pseudo_fixes
    wrong = _failing("simplified", FailureKind.NUMERIC_MISMATCH)
    assert flex_pass(None, lambda fixes: wrong, tflite, fixes=(), auto=True) is wrong


class NotingProgress(Progress):
    """progress.json as the child writes it, and which step saw which stage."""

    def __init__(self, path):
        super().__init__(path)
        self.seen = []


def _context(tmp_path, hand_over=None) -> Context:
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt")})
    return Context(spec, tmp_path, 1, NotingProgress(tmp_path / "progress.json"), started=0.0, hand_over=hand_over)


def _step(name, stage=Stage.LOAD, returns=None, **row):
    """A fake step: notes the stage it ran in, and returns the checkpoint with `returns` set."""
    def run(ctx, cp):
        ctx.progress.seen.append((name, ctx.progress.stage))
        return dataclasses.replace(cp, **(returns or {}))
    return pipeline.Step(name, run, stage, **row)


def _raises(exc):
    def run(ctx, cp):
        raise exc
    return run


def test_the_loop_notes_each_stage_skips_done_steps_and_other_engines(tmp_path):
    ctx = _context(tmp_path)
    steps = (_step("a"), _step("b", Stage.EXPORT), _step("c", Stage.SAVEDMODEL, engine="litert"),
             _step("d", None, engine="onnx2tf"), _step("e", Stage.VERIFY))
    cp, failure = pipeline.run_steps(ctx, Checkpoint(steps_done=("a",)), steps)
    assert failure is None and cp.steps_done == ("a", "b", "d", "e")
    assert ctx.progress.seen == [("b", "export"), ("d", "export"), ("e", "verify")]  # d notes its own stages


def test_a_problem_skips_to_the_rows_that_explain_it_and_fails_in_its_stage(tmp_path):
    ctx = _context(tmp_path)

    def explain(ctx, cp):
        ctx.progress.seen.append(("explain", ctx.progress.stage))
        return dataclasses.replace(cp, problem=dataclasses.replace(cp.problem, message=cp.problem.message + "; why"))
    problem = Problem(FailureKind.NUMERIC_MISMATCH, "off by 0.3")
    steps = (_step("a", Stage.EXPORT, returns={"problem": problem}), _step("b", Stage.VERIFY),
             pipeline.Step("explain", explain, None, after_problem=True))
    cp, failure = pipeline.run_steps(ctx, Checkpoint(), steps)
    assert ctx.progress.seen == [("a", "export"), ("explain", "export")]
    assert failure.kind is FailureKind.NUMERIC_MISMATCH and failure.stage is Stage.EXPORT
    assert failure.message == "off by 0.3; why" and cp.steps_done == ("a", "explain")


@pytest.mark.parametrize("exc, kind", [(ValueError("bad op"), FailureKind.EXPORT_ERROR),
                                       (MemoryError(), FailureKind.OUT_OF_MEMORY),
                                       (OSError(28, "No space left on device"), FailureKind.DISK_FULL),
                                       (ConversionError(FailureKind.FLEX_OPS, "needs Erf"), FailureKind.FLEX_OPS),
                                       (SystemExit(1), FailureKind.EXPORT_ERROR)])
def test_any_exception_in_a_step_is_the_models_failure_in_that_stage(tmp_path, exc, kind):
    ctx = _context(tmp_path)
    cp, failure = pipeline.run_steps(ctx, Checkpoint(), (_step("a"), pipeline.Step("b", _raises(exc), Stage.EXPORT),
                                                         _step("c", Stage.VERIFY)))
    assert failure.kind is kind and failure.stage is Stage.EXPORT and cp.steps_done == ("a",)
    with pytest.raises(KeyboardInterrupt):  # the user's, never the model's
        pipeline.run_steps(ctx, Checkpoint(), (pipeline.Step("k", _raises(KeyboardInterrupt()), Stage.LOAD),))


def test_a_hand_over_comes_before_its_row_only_after_work_done_in_this_interpreter(tmp_path):
    calls = []
    ctx = _context(tmp_path, hand_over=lambda ctx, cp, before: calls.append((before, cp.steps_done)))
    steps = (_step("a"), _step("b", Stage.EXPORT, hand_over_before=True), _step("c", Stage.VERIFY))
    pipeline.run_steps(ctx, Checkpoint(), steps)
    assert calls == [("b", ("a",))]
    calls.clear()  # resumed: its first row is where the replaced interpreter handed over
    pipeline.run_steps(ctx, Checkpoint(steps_done=("a",)), steps)
    assert calls == []


def test_a_hand_over_before_tflite_pays_only_for_a_large_savedmodel(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    (small / "variables.data").write_bytes(b"\0" * 1024)
    large = tmp_path / "large"
    large.mkdir()
    with open(large / "variables.data", "wb") as f:  # sparse: the size is what counts, not the blocks
        f.truncate(int(handover.TFLITE_HAND_OVER_MB * 2**20) + 1)

    def with_saved(path: Path) -> Checkpoint:
        return Checkpoint(built=BuiltSavedModel("simplified", dataclasses.replace(_saved(), path=str(path)), (), ()))
    assert handover.worth_it(with_saved(small), "tflite") is None
    assert "TFLite conversion of its 64 MB SavedModel" in handover.worth_it(with_saved(large), "tflite")
    assert handover.worth_it(Checkpoint(), "prepare") == "TensorFlow's stages, without torch"


def test_every_engine_has_rows_and_every_row_names_a_known_engine():
    engines = {step.engine for step in pipeline.STEPS} - {None}
    assert engines == set(pipeline.ENGINES)
    names = [step.name for step in pipeline.STEPS]
    assert len(names) == len(set(names))  # steps_done records names: two rows may not share one
    assert [s.name for s in pipeline.STEPS if s.after_problem] == ["explain"]


def test_every_fix_the_code_can_record_is_in_the_readmes_known_fixes():
    import re

    root = Path(__file__).resolve().parents[1]
    names = {m for p in (root / "converter").rglob("*.py") for m in re.findall(r'Fix\("([a-z0-9_]+)"', p.read_text())}
    assert {"pseudo_ops", "onnx2tf_mode", "flatten_outputs"} <= names  # the search finds them
    readme = (root / "README.md").read_text()
    known = readme[readme.index("## Known fixes"):readme.index("## The pipeline, stage by stage")]
    undocumented = sorted(n for n in names if f"`{n}" not in known)
    assert not undocumented, f"fixes without a row in the README's known fixes: {undocumented}"


def _fake_converter(monkeypatch, refuses: dict):
    """tflite.py's converter call, faked: bytes for a recipe, or the error it is told to raise."""
    from converter.stages import tflite

    def convert(saved_model, *, recipe, allow_flex, calibration=()):
        if recipe in refuses:
            raise refuses[recipe]
        return b"TFL3" + recipe.encode()
    monkeypatch.setattr(tflite, "_convert", convert)
    return tflite


def test_a_recipe_the_converter_refuses_is_recorded_and_the_others_are_built(tmp_path, monkeypatch):
    tflite = _fake_converter(monkeypatch, {"int8": RuntimeError("error: 'tfl.atan2' op is neither a custom op nor a flex op")})
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt"), "deliverables": ["int8", "fp16"]})
    result, files = tflite.to_tflite(spec, tmp_path / "saved_model", tmp_path, calibration=[{"x": np.zeros(1)}])
    assert [f.recipe for f in files] == ["fp16"] and Path(files[0].path).read_bytes() == b"TFL3fp16"
    (refusal,) = result.refused
    assert refusal.recipe == "int8" and "tfl.atan2" in refusal.reason
    assert refusal.describe().startswith("int8 TFLite could not be built: TFLiteConverter (int8): RuntimeError")


def test_a_conversion_fails_when_every_recipe_is_refused_or_ops_need_flex(tmp_path, monkeypatch):
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt"), "deliverables": ["drq", "fp16"]})
    tflite = _fake_converter(monkeypatch, {"drq": RuntimeError("error: first"), "fp16": RuntimeError("error: second")})
    with pytest.raises(ConversionError, match="TFLiteConverter \\(drq\\)") as raised:
        tflite.to_tflite(spec, tmp_path / "saved_model", tmp_path)
    assert raised.value.kind is FailureKind.TFLITE_ERROR  # what the ladder may retry in another mode
    flex = RuntimeError("Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback "
                        "using TF Select (Select TF ops). tf.Erf {device = \"\"}")
    tflite = _fake_converter(monkeypatch, {"drq": flex})
    with pytest.raises(ConversionError) as raised:
        tflite.to_tflite(spec, tmp_path / "saved_model", tmp_path)
    assert raised.value.kind is FailureKind.FLEX_OPS and raised.value.ops == ("Erf",)  # the Flex pass's to mend


def test_the_chain_names_the_first_recipe_passed_over_whether_refused_or_failing():
    from converter.results import Refusal, RuntimeCheck
    from converter.verdict import fallback_fixes

    drq = Deliverable("drq", "/a/drq.tflite", 10, (_comparison(),))
    int8 = Deliverable("int8", "/a/int8.tflite", 9, runtime=RuntimeCheck(False, "RuntimeError: XNNPACK failed to prepare"))
    (fix,) = fallback_fixes(("int8_io", "int8", "drq"), (int8, drq), drq, (Refusal("int8_io", "no int8 kernel"),))
    assert fix.label == "deliverable:drq" and fix.reason == "int8-IO TFLite could not be built: no int8 kernel"
    (fix,) = fallback_fixes(("int8", "drq"), (int8, drq), drq)
    assert "XNNPACK failed to prepare" in fix.reason and fix.reason.startswith("int8 TFLite does not run")
    assert fallback_fixes(("drq",), (drq,), drq) == ()
