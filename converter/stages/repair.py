"""The repair step (child side): a quantized recipe whose file missed is rebuilt with the layers that
cause the error kept in float32, before the chain moves on to the next recipe.

For each requested recipe with int8 weights (drq, int8, int8_io) ahead of the first file that
passes, whose numbers missed: its layers are ranked against the float32 file on the verification
inputs (layers.py), the worst quantized one is kept in float32, the file rebuilt (selective.py) and
judged again; then the ranking is taken again on the rebuilt file (keeping one layer float moves
the error: an int8 layer's input grid belongs to the layer before it) and the next worst are added:
one a round at first, so that a file one or two layers from passing keeps no more than those, then
half as many again as are kept (1, 2, 3, 4, 6, 9, ...), so that a miss spread over many layers is
found within MAX_REBUILDS rebuilds. A layer whose weights would take the file below
`repair_min_quantized` of the plain recipe's quantized weights is passed over for the next that
fits. The search stops when the file passes, when no layer that adds error fits that share (then
the chain goes on and the record says why), after MAX_REBUILDS, or when the model's timeout nears.

A repaired file is verified like any other (every verification input, the runtime checks) and
delivered as its recipe with a recorded fix `selective:<recipe>`; every quantized file that missed
keeps its per-layer report (the worst layers) in its record.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from pathlib import Path

from ..failures import first_line, reraise_if_memory
from ..recipes import FP32, RECIPES
from ..results import Deliverable, LayerError, Repair
from .checkpoint import Checkpoint, Context
from .layers import TOP, layer_errors, weight_elements

REPAIRED_SUFFIX = "_selective"
# the verification inputs the layers are ranked on (every one still judges each rebuilt file): running
# both files with every tensor kept costs about what verifying them does, once per round
RANKING_INPUTS = 2
# rebuilds a search may take (up to about a hundred layers kept): a miss spread over more (a detector
# whose error grows with depth) is told as such instead of spending the model's timeout
MAX_REBUILDS = 12
SECONDS_SPARED = 30  # what a repair leaves of the model's timeout for the rest of its run
MEMORY_SHARE = 0.8  # of the memory the ceiling leaves, what the per-layer comparison may take


def repairable(recipe: str) -> bool:
    return RECIPES[recipe].quantized_dtype == "int8"


def candidates(requested: tuple[str, ...], files: tuple[Deliverable, ...]) -> list[Deliverable]:
    """The files worth repairing: int8-weight recipes ahead of the first file that passes, whose own
    numbers missed (a file that cannot run is not the quantization's to mend)."""
    found = []
    for recipe in requested:
        file = next((d for d in files if d.recipe == recipe), None)
        if file is None:
            continue
        if file.passed:
            break
        if repairable(recipe) and file.verified and not file.numbers_pass:
            found.append(file)
    return found


def float32_file(ctx: Context, cp: Checkpoint) -> tuple[Checkpoint, Deliverable]:
    """The float32 TFLite file, verified: the requested one, or one built now (kept in the checkpoint,
    so the explanation and the repair build it once)."""
    from .tflite import to_tflite
    from .verify import verify

    found = next((d for d in cp.deliverables if d.recipe == FP32), None) or cp.float32
    if found is not None:
        return cp, found
    spec = dataclasses.replace(ctx.spec, deliverables=(FP32,))
    _, files = to_tflite(spec, Path(cp.savedmodel.path), ctx.artifacts)
    _, (fp32,) = verify(spec, cp.samples.sets, cp.savedmodel, files, ctx.threads, deploy=False)
    return dataclasses.replace(cp, float32=fp32), fp32


def repair(ctx: Context, cp: Checkpoint) -> Checkpoint:
    """The checkpoint with each missed quantized file's per-layer report, and the first one that a
    repair makes pass in its place. Whatever goes wrong here (a conversion the float32 file or the
    calibration needs, a rebuild, the runtime) costs the file its repair, never the model its verdict:
    the plain files are judged as they are, the reason recorded."""
    misses = candidates(ctx.spec.deliverables, cp.deliverables)
    if not misses or cp.savedmodel is None:
        return cp
    files = list(cp.deliverables)

    def note(plain: Deliverable, why: str) -> None:
        print(f"--- {plain.label} not repaired: {why}", file=sys.stderr)
        if ctx.spec.repair:  # with the repair off, nothing was promised: the log says why there is no report
            files[files.index(plain)] = dataclasses.replace(plain, repair=_unrepaired(plain, why))

    if ctx.seconds_left < 2 * SECONDS_SPARED:
        for plain in misses:
            note(plain, f"the model's timeout was near ({max(ctx.seconds_left, 0):.0f} s left)")
        return dataclasses.replace(cp, deliverables=tuple(files))
    started = time.perf_counter()
    try:
        cp, fp32 = float32_file(ctx, cp)
    except Exception as exc:  # noqa: BLE001 - the float32 file is the repair's, not the model's
        reraise_if_memory(exc)
        traceback.print_exc()
        for plain in misses:
            note(plain, f"the float32 file to compare it with could not be built: {first_line(exc)}")
        return dataclasses.replace(cp, deliverables=tuple(files))
    print(f"--- the float32 file to rank layers against: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if not fp32.numbers_pass:
        return cp  # the conversion itself is off: the explain step says where, nothing to repair against
    from ..tflite_run import tf_layout_feed

    feeds = [tf_layout_feed(cp.savedmodel, arrays) for arrays, _ in cp.samples.sets[:RANKING_INPUTS]]
    for plain in misses:
        crowded = _beyond_memory(ctx, fp32, plain)
        if crowded:  # every tensor of both files kept at once: the model's memory ceiling would end the model
            note(plain, crowded)
            continue
        started = time.perf_counter()
        try:
            layers = layer_errors(fp32.path, plain.path, feeds, ctx.threads)
            outcome = _search(ctx, cp, plain, fp32, feeds, layers) if ctx.spec.repair else None
        except Exception as exc:  # noqa: BLE001 - a failed repair leaves the plain file's verdict
            reraise_if_memory(exc)
            traceback.print_exc()
            _selective_path(plain).unlink(missing_ok=True)
            note(plain, f"the repair failed: {first_line(exc)}")
            continue
        print(f"--- {plain.label}: ranked its layers{' and searched' if outcome else ''} in "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        index = files.index(plain)
        files[index] = outcome if outcome is not None and outcome.passed else dataclasses.replace(
            plain, layers=layers[:TOP], repair=outcome.repair if outcome is not None else None)
        if files[index].passed:
            break
    return dataclasses.replace(cp, deliverables=tuple(files))


def _unrepaired(plain: Deliverable, why: str) -> Repair:
    return Repair((), 1.0, plain.bytes, plain.worst.brief(plain.label) if plain.worst else "", 0, False, why)


def _selective_path(plain: Deliverable) -> Path:
    return Path(plain.path).with_name(f"model_{plain.recipe}{REPAIRED_SUFFIX}.tflite")


def _beyond_memory(ctx: Context, fp32: Deliverable, plain: Deliverable) -> str:
    """Why the per-layer comparison would not fit under the model's memory ceiling ("" when it does):
    it keeps every tensor of both files, on top of what this process holds."""
    from .layers import tensor_mb
    from .memory import rss_now_mb

    if not ctx.memory_limit_mb:
        return ""
    files_mb = (Path(fp32.path).stat().st_size + Path(plain.path).stat().st_size) / 2**20
    # every tensor of both files, and the files themselves three times over: read, parsed by a rebuild, written
    need, room = tensor_mb(fp32.path) + tensor_mb(plain.path) + 3 * files_mb, ctx.memory_limit_mb - rss_now_mb()
    if need <= MEMORY_SHARE * room:
        return ""
    return (f"comparing its layers keeps every tensor of both files, {need:,.0f} MB, more than {MEMORY_SHARE:.0%} of the "
            f"{max(room, 0):,.0f} MB its memory ceiling leaves (--tflite-memory-limit-mb)")


def _search(ctx: Context, cp: Checkpoint, plain: Deliverable, fp32: Deliverable, feeds,
            layers: tuple[LayerError, ...]) -> Deliverable:
    """The plain file rebuilt with more of its worst layers in float32 a round until it passes: the passing file
    (its `repair` says how), or the plain file with a `repair` saying why none passed."""
    from ..protocol import write_bytes_atomic
    from .verify import verify

    spec, recipe = ctx.spec, plain.recipe
    build = None  # made on the first rebuild: int8's costs a calibration, not worth it when no layer fits
    plain_quantized, _ = weight_elements(Path(plain.path).read_bytes())
    path = _selective_path(plain)
    kept: list[str] = []
    ranking, note, last_round = layers, "", 0.0
    record = _unrepaired(plain, "")
    budget, spent = plain_quantized * (1 - spec.repair_min_quantized), 0  # int8 weight elements it may un-quantize
    editable = RECIPES[recipe].calibrated  # TensorFlow's quantizer keeps any layer float; the DRQ edit, weighted ones
    while True:
        left = [e for e in ranking if e.quantized and e.own > 0 and e.name not in kept and (editable or e.weights)]
        chosen = _next_layers(left, max(1, len(kept) // 2), budget - spent)
        if not chosen:
            note = _why_none(left, ranking, spent, plain_quantized, spec.repair_min_quantized)
            break
        if record.rebuilds >= MAX_REBUILDS:
            note = (f"{_layers(len(kept))} kept in float32 over {MAX_REBUILDS} rebuilds, the worst first, did not make "
                    "it pass (its error is spread over many layers)")
            break
        if ctx.seconds_left < SECONDS_SPARED + 1.5 * last_round:  # another round would eat into the rest of the run
            note = f"the model's timeout was near after {_layers(len(kept))} kept in float32"
            break
        round_started = time.perf_counter()
        build = build or _builder(ctx, cp, recipe, fp32)
        kept += [e.name for e in chosen]
        spent += sum(e.weights for e in chosen)
        model = build(set(kept))
        quantized, _ = weight_elements(model)
        share = quantized / plain_quantized if plain_quantized else 0.0
        record = dataclasses.replace(record, kept_float=tuple(kept), quantized_share=round(share, 4),
                                     rebuilds=record.rebuilds + 1)
        if share < spec.repair_min_quantized:
            note = (f"keeping {_layers(len(kept))} in float32 leaves {share:.1%} of the plain file's int8 weights "
                    f"int8, below repair_min_quantized {spec.repair_min_quantized:.0%}")
            break
        write_bytes_atomic(path, model)
        built = Deliverable(recipe, str(path), len(model))
        _, (checked,) = verify(spec, cp.samples.sets, cp.savedmodel, (built,), ctx.threads, deploy=False)
        print(f"--- {plain.label} with {_layers(len(kept))} in float32 ({share:.1%} of its int8 weights int8): "
              f"{checked.worst.brief(plain.label) if checked.worst else checked.runtime.problem}", file=sys.stderr)
        if not checked.verified:
            note = f"the rebuilt file does not run here: {checked.runtime.problem}"
            break
        if checked.numbers_pass:  # where it goes, as every delivered file: both kernel sets, Micro
            _, (final,) = verify(spec, cp.samples.sets, cp.savedmodel, (built,), ctx.threads)
            if final.passed:
                return dataclasses.replace(final, layers=layers[:TOP], repair=dataclasses.replace(record, passed=True))
            note = f"the rebuilt file does not run where it goes: {final.runtime.problem}"
            break
        ranking = layer_errors(fp32.path, str(path), feeds, ctx.threads)
        last_round = time.perf_counter() - round_started
    path.unlink(missing_ok=True)
    print(f"--- {plain.label} not repaired: {note}", file=sys.stderr)
    return dataclasses.replace(plain, layers=layers[:TOP], repair=dataclasses.replace(record, note=note))


def _next_layers(left: list[LayerError], count: int, room: int) -> list[LayerError]:
    """The next `count` worst layers whose weights fit in `room` (int8 weight elements)."""
    chosen = []
    for layer in left:
        if len(chosen) == count:
            break
        if layer.weights <= room:
            chosen.append(layer)
            room -= layer.weights
    return chosen


def _why_none(left: list[LayerError], ranking, spent: int, plain_quantized: int, minimum: float) -> str:
    if not ranking:
        return "its layers do not pair with the float32 file's"
    if not left:
        return "no quantized layer left that adds error"
    worst = left[0]
    share = 1 - (spent + worst.weights) / plain_quantized if plain_quantized else 0.0
    return (f"keeping the layer that adds most error, {worst.op} '{worst.name}' ({worst.weights:,} int8 weights), in "
            f"float32{' too' if spent else ''} would leave {share:.1%} of the plain file's int8 weights int8, below "
            f"repair_min_quantized {minimum:.0%}")


def _layers(n: int) -> str:
    return f"{n} layer{'s' * (n != 1)}"


def _builder(ctx: Context, cp: Checkpoint, recipe: str, fp32: Deliverable):
    """`keep -> file bytes` for the recipe (selective.py): an edit of the DRQ file, or TensorFlow's
    quantizer on the model calibrated once."""
    from .selective import drq_keeping, int8_keeping

    float_bytes = Path(fp32.path).read_bytes()
    if not RECIPES[recipe].calibrated:
        plain = Path(next(d.path for d in cp.deliverables if d.recipe == recipe)).read_bytes()
        return lambda keep: drq_keeping(plain, float_bytes, keep)
    from ..tflite_run import tf_layout_feed
    from .tflite import calibrated_model

    feeds = [tf_layout_feed(cp.savedmodel, arrays) for arrays in cp.samples.calibration_sets]
    calibrated = calibrated_model(ctx.spec, Path(cp.savedmodel.path), recipe, feeds)
    return int8_keeping(calibrated, recipe, float_bytes)
