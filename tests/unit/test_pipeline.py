"""The child's table of steps and its one loop, with fake steps (pipeline.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from converter.failures import ConversionError, FailureKind, Stage
from converter.protocol import Progress
from converter.spec import ENGINES, ModelSpec
from converter.stages import pipeline
from converter.stages.checkpoint import Checkpoint, Context, Problem


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


def test_every_engine_has_rows_and_every_row_names_a_known_engine():
    engines = {step.engine for step in pipeline.STEPS} - {None}
    assert engines == set(ENGINES)
    names = [step.name for step in pipeline.STEPS]
    assert len(names) == len(set(names))  # steps_done records names: two rows may not share one
    assert [s.name for s in pipeline.STEPS if s.after_problem] == ["explain"]


def test_every_fix_the_code_can_record_is_in_the_readmes_known_fixes():
    import re

    root = Path(__file__).resolve().parents[2]
    names = {m for p in (root / "converter").rglob("*.py") for m in re.findall(r'Fix\("([a-z0-9_]+)"', p.read_text())}
    assert {"pseudo_ops", "onnx2tf_mode", "flatten_outputs"} <= names  # the search finds them
    readme = (root / "README.md").read_text()
    known = readme[readme.index("## Known fixes"):readme.index("## The pipeline, stage by stage")]
    undocumented = sorted(n for n in names if f"`{n}" not in known)
    assert not undocumented, f"fixes without a row in the README's known fixes: {undocumented}"


def _sampled(tmp_path, **spec_fields):
    """What the load step keeps of its samples, for a fake model that doubles its one input."""
    from types import SimpleNamespace

    import numpy as np

    from converter.protocol import SampleArrays
    from converter.spec import InputSpec
    from converter.stages.load import make_inputs

    inputs = (InputSpec("x", (1, 4)),)
    spec = ModelSpec(model_id="m", path=str(tmp_path / "m.pt"), inputs=inputs, **spec_fields)
    seeded = make_inputs(inputs, spec.seed)
    found = pipeline._samples(spec, SimpleNamespace(inputs=inputs), SampleArrays((seeded[0],), (seeded[0] * 2,)),
                              lambda loaded, arrays: ([np.asarray(arrays[0]) * 2], None))
    return seeded[0], found


def test_without_a_calibration_folder_the_files_are_verified_on_verify_samples_seeded_inputs(tmp_path):
    import numpy as np

    seeded, found = _sampled(tmp_path, verify_samples=5, deliverables=("int8",))
    sets = found["samples"].sets
    assert len(sets) == 5 and np.array_equal(sets[0][0][0], seeded)  # the seeded sample first, then four more
    assert all(np.array_equal(reference[0], inputs[0] * 2) for inputs, reference in sets)  # PyTorch's outputs on each
    firsts = [inputs[0].tobytes() for inputs, _ in sets]
    assert len(set(firsts)) == 5
    calibration = {inputs[0].tobytes() for inputs in found["samples"].calibration_sets}
    assert len(calibration) == 32 and not calibration & set(firsts)  # never verified on what calibrated it
    _, one = _sampled(tmp_path, verify_samples=1)
    assert len(one["samples"].sets) == 1 and one["samples"].verify_sets == ()  # the seeded sample alone, as before


def test_with_a_calibration_folder_its_held_out_samples_verify_whatever_verify_samples_says(tmp_path):
    import numpy as np

    (tmp_path / "cal").mkdir()
    for i in range(10):
        np.save(tmp_path / "cal" / f"{i}.npy", np.full((1, 4), i, np.float32))
    _, found = _sampled(tmp_path, verify_samples=7, calibration=str(tmp_path / "cal"), deliverables=("int8",))
    assert [float(inputs[0][0, 0]) for inputs, _ in found["samples"].sets] == [8.0, 9.0]
