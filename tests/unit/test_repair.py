"""Which quantized files the repair takes on, how its outcome is recorded and shown (fast tier: no
conversion; tests/e2e/test_repair.py repairs real files)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from converter.html_report import render
from converter.report import layer_lines
from converter.results import Deliverable, LayerError, Repair, Result
from converter.spec import SpecError, validate_layer
from converter.stages.repair import candidates
from converter.verdict import repair_fixes

from ..support import comparison

MISS = dataclasses.replace(comparison(), range_rel_err=0.3, mismatched=3)


def file(recipe: str, passes: bool = True, runs: bool = True) -> Deliverable:
    from converter.checks import RuntimeCheck

    return Deliverable(recipe, f"/a/model_{recipe}.tflite", 100, (comparison() if passes else MISS,),
                       runtime=RuntimeCheck(runs, "" if runs else "failed to prepare"))


def test_only_int8_weight_recipes_ahead_of_the_first_passing_file_whose_numbers_missed_are_repaired():
    files = (file("fp16", passes=False), file("drq", passes=False), file("int8", passes=False), file("fp32"))
    assert [d.recipe for d in candidates(("fp16", "drq", "int8", "fp32"), files)] == ["drq", "int8"]
    # behind a file that passes: never needed
    assert candidates(("fp32", "drq"), (file("drq", passes=False), file("fp32"))) == []
    # a file whose numbers pass but that does not run where it goes is not the quantization's to mend
    assert candidates(("int8",), (file("int8", runs=False),)) == []
    # a file that never ran has nothing to rank
    unverified = dataclasses.replace(file("drq"), outputs=())
    assert candidates(("drq",), (unverified,)) == []


LAYERS = (LayerError("dense_1", "FULLY_CONNECTED", 130.0, 129.5, True), LayerError("mean", "MEAN", 0.2, 0.1, False))


def test_a_repaired_file_is_a_recorded_fix_and_its_layers_are_shown():
    repair = Repair(("dense_1",), 0.987, 113944, "DRQ TFLite output 'out': range-relative max error 0.3 > 0.05", 1,
                    passed=True)
    repaired = dataclasses.replace(file("drq"), path="/a/model_drq_selective.tflite", bytes=117856, layers=LAYERS,
                                   repair=repair)
    (fix,) = repair_fixes(repaired)
    assert fix.label == "selective:drq"
    assert fix.reason.startswith("DRQ TFLite with 1 layer kept in float32 (dense_1): 98.7% of the plain file's int8 "
                                 "weights still int8, 0.12 MB against 0.11 MB; the plain file: DRQ TFLite output 'out'")
    assert repair_fixes(file("drq")) == () and repair_fixes(dataclasses.replace(repaired, repair=dataclasses.replace(
        repair, passed=False))) == ()
    (shown,) = layer_lines(repaired)
    assert "FULLY_CONNECTED 'dense_1' adds 130 (output error 130), kept in float32 by the repair; MEAN 'mean' adds" in shown
    assert "runs in float32" in shown  # a layer the recipe never quantized is not one the repair kept
    refused = dataclasses.replace(repaired, repair=dataclasses.replace(repair, passed=False, note="too little left"))
    assert layer_lines(refused)[1] == "  DRQ TFLite not repaired: too little left"
    page = render({"m": Result(model_id="m", model_path="/m.pt", status="passed", deliverables=(repaired,))}, {})
    text = page.replace("<wbr>", "")  # break chances in long layer names
    assert "Quantized files layer by layer" in page and "repaired: 1 layer(s) in float32, 98.7%" in text
    assert "FULLY_CONNECTED &#x27;dense_1&#x27; adds 130 (output error 130), kept in float32 by the repair" in text
    assert "layer by layer" not in render({"m": Result(model_id="m", model_path="/m.pt", status="passed",
                                                       deliverables=(file("drq"),))}, {})


@pytest.mark.parametrize("value", [1.5, -0.1, "most"])
def test_the_share_a_repair_must_keep_quantized_is_a_share(value):
    with pytest.raises(SpecError, match="repair_min_quantized"):
        validate_layer({"repair_min_quantized": value}, "m.toml")
    assert validate_layer({"repair_min_quantized": 0.9, "repair": False}, "m.toml") == {
        "repair_min_quantized": 0.9, "repair": False}


def _search_with(tmp_path, monkeypatch, *, passes_after: int | None, weights: int = 1, minimum: float = 0.8,
                 recipe: str = "drq", runtime_fails: bool = False, deploys: list | None = None):
    """The search loop over fakes: a ranking that names a new worst layer a round, a builder, a weight count
    that drops by `weights` a kept layer, and a verdict that passes once `passes_after` layers are kept."""
    import time

    from converter.checks import RuntimeCheck
    from converter.protocol import Progress, SampleArrays
    from converter.spec import ModelSpec
    from converter.stages import repair
    from converter.stages import verify as verify_module
    from converter.stages.checkpoint import Checkpoint, Context

    plain = dataclasses.replace(file(recipe, passes=False), path=str(tmp_path / f"model_{recipe}.tflite"))
    Path(plain.path).write_bytes(b"0" * 100)
    kept_now: list[set] = [set()]
    deploys = [] if deploys is None else deploys

    def ranking(n):
        return tuple(LayerError(f"layer{i}", "CONV_2D", 1.0 / (i + 1), 1.0 / (i + 1), True, weights) for i in range(n, 200))

    def build(keep):
        kept_now[0] = set(keep)
        return b"1" * (100 - weights * len(keep))

    def judged(spec, sets, saved, files, threads, deploy=True):
        (built,) = files
        ok = passes_after is not None and len(kept_now[0]) >= passes_after
        deploys.append(deploy)
        runs = RuntimeCheck(not (deploy and runtime_fails), "failed to prepare" if deploy and runtime_fails else "")
        return None, (dataclasses.replace(built, outputs=(comparison() if ok else MISS,), runtime=runs),)

    monkeypatch.setattr(repair, "_builder", lambda ctx, cp, recipe, fp32: build)
    monkeypatch.setattr(repair, "weight_elements", lambda data: (len(data), 0))
    monkeypatch.setattr(repair, "layer_errors", lambda f, q, feeds, threads: ranking(len(kept_now[0])))
    monkeypatch.setattr(verify_module, "verify", judged)
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt"), "repair_min_quantized": minimum})
    ctx = Context(spec, tmp_path, 1, Progress(tmp_path / "progress.json"), started=time.monotonic())
    cp = Checkpoint(samples=SampleArrays())
    return repair._search(ctx, cp, plain, file("fp32"), [], ranking(0))


def test_the_search_keeps_one_more_layer_a_round_until_the_file_passes(tmp_path, monkeypatch):
    deploys = []
    found = _search_with(tmp_path, monkeypatch, passes_after=3, deploys=deploys)
    assert found.repair.passed and found.repair.kept_float == ("layer0", "layer1", "layer2")
    assert found.repair.rebuilds == 3 and found.repair.quantized_share == 0.97 and found.numbers_pass
    assert found.path.endswith("model_drq_selective.tflite")
    assert deploys == [False, False, False, True]  # the passing file is then checked where it goes, as any file
    # ... and one that passes its numbers but does not run where it goes is not delivered, nor left behind
    refused = _search_with(tmp_path, monkeypatch, passes_after=1, runtime_fails=True)
    assert not refused.repair.passed and refused.path.endswith("model_drq.tflite")
    assert refused.repair.note == ("the rebuilt file does not run where it goes: does not run on the TFLite runtime "
                                   "without TensorFlow: failed to prepare")
    assert not (tmp_path / "model_drq_selective.tflite").exists()


def test_the_search_is_bounded_by_its_rebuilds_and_by_the_share_it_must_keep(tmp_path, monkeypatch):
    from converter.stages.repair import MAX_REBUILDS

    # one more layer a round, then half as many again as are kept: 1, 2, 3, 4, 6, 9, ... 94 after 12 rebuilds
    # layers without weights (an int8 file's concatenation) may be kept too, where the rebuild can keep them
    endless = _search_with(tmp_path, monkeypatch, passes_after=None, weights=0, recipe="int8")
    assert endless.repair.rebuilds == MAX_REBUILDS and not endless.repair.passed
    assert endless.repair.kept_float[:5] == ("layer0", "layer1", "layer2", "layer3", "layer4")
    assert endless.repair.note == (f"94 layers kept in float32 over {MAX_REBUILDS} rebuilds, the worst first, did not "
                                   "make it pass (its error is spread over many layers)")
    assert not Path(tmp_path / "model_int8_selective.tflite").exists()  # no half-repaired file left behind
    wide = _search_with(tmp_path, monkeypatch, passes_after=5, weights=0, recipe="int8")  # 1, 2, 3, 4, then 6
    assert wide.repair.passed and len(wide.repair.kept_float) == 6 and wide.repair.rebuilds == 5
    # the DRQ edit can only give a layer back its float32 weights: a layer without int8 weights is no candidate
    weightless = _search_with(tmp_path, monkeypatch, passes_after=1, weights=0)
    assert weightless.repair.rebuilds == 0 and weightless.repair.note == "no quantized layer left that adds error"
    # each layer holds 8 of the 100 int8 weights: two fit in the 20 % a repair may take, the third does not
    heavy = _search_with(tmp_path, monkeypatch, passes_after=None, weights=8)
    assert heavy.repair.rebuilds == 2 and heavy.repair.note == (
        "keeping the layer that adds most error, CONV_2D 'layer2' (8 int8 weights), in float32 too would leave "
        "76.0% of the plain file's int8 weights int8, below repair_min_quantized 80%")


def test_the_layer_comparison_is_skipped_when_it_would_not_fit_under_the_memory_ceiling(tmp_path, monkeypatch):
    """Every tensor of both files is kept: on a large model that could be the child's ceiling, which would
    end the whole model; the comparison is then left out, and the record says why."""
    import time

    from converter.protocol import Progress
    from converter.spec import ModelSpec
    from converter.stages import layers, memory, repair
    from converter.stages.checkpoint import Context

    monkeypatch.setattr(layers, "tensor_mb", lambda path: 600.0)
    monkeypatch.setattr(memory, "rss_now_mb", lambda: 1200.0)
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt")})

    def context(limit):
        return Context(spec, tmp_path, 1, Progress(tmp_path / "progress.json"), started=time.monotonic(),
                       memory_limit_mb=limit)

    for recipe in ("fp32", "drq"):
        (tmp_path / f"model_{recipe}.tflite").write_bytes(b"0" * 2**20)  # 1 MB each: 6 MB more
    fp32, drq = (dataclasses.replace(file(r), path=str(tmp_path / f"model_{r}.tflite")) for r in ("fp32", "drq"))
    assert repair._beyond_memory(context(4000.0), fp32, drq) == ""  # 1206 MB of 2800 left
    assert repair._beyond_memory(context(0.0), fp32, drq) == ""  # no ceiling known
    assert repair._beyond_memory(context(2400.0), fp32, drq) == (
        "comparing its layers keeps every tensor of both files, 1,206 MB, more than 80% of the 1,200 MB its memory "
        "ceiling leaves (--tflite-memory-limit-mb)")


def test_a_repair_that_fails_costs_the_file_its_repair_never_the_model_its_verdict(tmp_path, monkeypatch):
    """An error anywhere in the repair (here the rebuild) leaves the plain files to be judged as they are."""
    import time

    from converter.protocol import Progress, SampleArrays
    from converter.spec import ModelSpec
    from converter.stages import repair
    from converter.stages.checkpoint import Checkpoint, Context

    from ..support import saved_model

    def boom(ctx, cp, recipe, fp32):
        raise RuntimeError("mlir_quantize could not read the model")

    monkeypatch.setattr(repair, "float32_file", lambda ctx, cp: (cp, file("fp32")))
    monkeypatch.setattr(repair, "layer_errors", lambda f, q, feeds, threads: (dataclasses.replace(LAYERS[0], weights=10),))
    monkeypatch.setattr(repair, "weight_elements", lambda data: (100, 0))
    monkeypatch.setattr(repair, "_builder", boom)
    (tmp_path / "model_drq.tflite").write_bytes(b"0" * 100)
    plain = dataclasses.replace(file("drq", passes=False), path=str(tmp_path / "model_drq.tflite"))
    spec = ModelSpec.from_dict({"model_id": "m", "path": str(tmp_path / "m.pt"), "deliverables": ["drq", "fp16"]})
    ctx = Context(spec, tmp_path, 1, Progress(tmp_path / "progress.json"), started=time.monotonic())
    cp = Checkpoint(savedmodel=saved_model(), deliverables=(plain, file("fp16")), samples=SampleArrays())
    found = repair.repair(ctx, cp)
    drq, fp16 = found.deliverables
    assert drq.path == plain.path and drq.outputs == plain.outputs and fp16 == file("fp16")  # judged as they were
    assert drq.repair.note == "the repair failed: RuntimeError: mlir_quantize could not read the model"
    assert found.problem is None  # the verdict step decides: fp16 is delivered


def test_a_restored_entry_takes_its_selective_fix_again_with_its_verdict():
    """Under other tolerances (the cache's restore) another file may be chosen: the fix follows the choice."""
    from converter.results import Fix
    from converter.spec import ModelSpec
    from converter.verdict import judge

    repaired = dataclasses.replace(file("drq"), layers=LAYERS, repair=Repair(("dense_1",), 0.98, 90, "missed", 1, True))
    stale = Fix("selective", "drq", "from the conversion")
    record = Result(model_id="m", model_path="/m.pt", status="passed", deliverables=(repaired, file("fp16")),
                    delivered="drq", fixes=(stale,))
    as_converted = judge(record, ModelSpec.from_dict({"model_id": "m", "path": "/m.pt", "deliverables": ["drq", "fp16"]}))
    assert as_converted.delivered == "drq" and [f.label for f in as_converted.fixes] == ["selective:drq"]
    assert as_converted.fixes[0].reason.startswith("DRQ TFLite with 1 layer kept in float32 (dense_1)")
    fp16_first = judge(record, ModelSpec.from_dict({"model_id": "m", "path": "/m.pt", "deliverables": ["fp16", "drq"]}))
    assert fp16_first.delivered == "fp16" and fp16_first.fixes == ()
