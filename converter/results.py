"""Stage results and the per-model Result: frozen dataclasses that cross from the child to the
parent (result.json), from workers to the controller, into the cache, the summaries and the merge,
serialised by protocol.py. A Result is the one record of a model: reports, the terminal summary,
JUnit properties and the baseline all read it; JSON is parsed only where a file is read.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .failures import Failure, FailureKind, normalise_message
from .protocol import build, plain, write_json_atomic
from .recipes import RECIPES
from .signature import Signature

SCHEMA_VERSION = 2  # 2: deliverables as a list of recipes (1: fixed drq / fp32 fields)


class Outcome(str, enum.Enum):
    """What the test made of a model (xfails are strict: a model that passes against its
    [expect] is a failure, so there is no xpassed). None on a Result no test judged (the CLI)."""

    PASSED = "passed"
    FAILED = "failed"
    XFAILED = "xfailed"
    GONE = "gone"  # in the baseline, no longer in the models folder


@dataclass(frozen=True)
class Fix:
    """A known fix the pipeline applied by itself (and verified like everything else)."""

    name: str    # flatten_outputs | pseudo_ops | pt2_legacy_trace | onnx2tf_mode
    detail: str  # e.g. "erf", or "dict -> out, aux"
    reason: str  # why it was needed, for the report

    @property
    def label(self) -> str:
        return f"{self.name}:{self.detail}" if self.detail else self.name


@dataclass(frozen=True)
class TaskCheck:
    """An output judged by what it means (its declared task, tasks.py): how many of its decisions
    (rows, positions, anchors) or embeddings agree with PyTorch's over the verification inputs."""

    __test__ = False
    task: str            # classification | dense | embedding | detection
    units: int           # decisions (or embeddings) judged
    agree: int           # those that are PyTorch's
    near_ties: int       # those that differ where PyTorch's own decision is within the tolerance of a tie
    flipped: int         # those that differ where PyTorch's decision is clear (or embeddings that turned)
    allowed: int         # clear flips the task allows (tasks.CLEAR_FLIPS of the units)
    detail: str = ""     # what a decision is: "top-1 class", "score above 0.5", "cosine >= 0.99"
    min_cosine: float | None = None  # embedding: the worst input's cosine
    detected: int | None = None      # detection: anchors PyTorch detects with

    @property
    def passed(self) -> bool:
        return self.flipped <= self.allowed

    @property
    def agreement(self) -> float:
        return self.agree / self.units if self.units else 1.0

    def describe(self) -> str:
        what = "embeddings" if self.task == "embedding" else {"classification": "rows", "dense": "positions",
                                                               "detection": "anchors"}.get(self.task, "units")
        text = f"{self.task}: {self.agree}/{self.units} {what} agree ({self.detail})"
        if self.near_ties:
            text += f", {self.near_ties} near ties differ"
        text += f", {self.flipped} clear {'differ' if self.task == 'embedding' else 'flips'}"
        text += f" {'<=' if self.passed else '>'} {self.allowed} allowed"
        if self.min_cosine is not None:
            text += f", worst cosine {self.min_cosine:.4f}"
        if self.detected is not None:
            text += f", {self.detected} anchors detect in PyTorch"
        return text


@dataclass(frozen=True)
class OutputComparison:
    """One output of a candidate (ONNX, or a recipe's TFLite file) against PyTorch."""

    __test__ = False
    name: str
    reference_shape: tuple[int, ...]
    candidate_shape: tuple[int, ...]
    max_abs_err: float
    mean_abs_err: float
    output_range: float
    range_rel_err: float
    cosine: float
    top1_agreement: float | None
    mismatched: int
    elements: int
    tolerance: float
    p99_rel_err: float | None = None   # the 99th percentile of |error| / range: the max without its worst 1 %
    channel_axis: int | None = None    # judged per channel along this axis (the sidecar's channel_axis)
    worst_channel: int | None = None   # the channel whose own range-relative error is range_rel_err
    samples: int = 1                   # verification inputs the figures cover (stacked along the batch axis)
    # the verdict of the output's declared task (tasks.py), which is then the file's verdict on it
    task: TaskCheck | None = None
    outliers: int = 0                  # elements that may exceed the tolerance (recipes.Recipe.outliers)
    # a quantized output of rank 3 or more that declares no task: its channels along axis 1, each against
    # its own range (the worst one's error, which, how many elements are off so)
    channel_err: float | None = None
    channel_worst: int | None = None
    channel_off: int = 0

    @property
    def tensor_passed(self) -> bool:
        """The tensor check: the range-relative max error within the tolerance, or every element but
        a few outliers (a quantized recipe's allowance) within it, all of them finite; and so for each
        channel along axis 1 against its own range, where that is judged."""
        def within(err: float, off: int) -> bool:
            return err <= self.tolerance or (math.isfinite(err) and off <= self.outliers)

        return within(self.range_rel_err, self.mismatched) and (
            self.channel_err is None or within(self.channel_err, self.channel_off))

    @property
    def channel_note(self) -> str:
        """Where the whole tensor passes and a channel along axis 1 does not, that channel's figures."""
        if self.channel_err is None or self.channel_err <= self.tolerance or self.channel_off <= self.outliers:
            return ""
        return (f"; but channel {self.channel_worst} along axis 1 is off by {self.channel_err:.3g} of its own range "
                f"({self.channel_off} elements beyond {self.tolerance:.3g}): declare what the output means (task = "
                "\"detection\", ...), or task = \"regression\" to judge the whole tensor only")

    @property
    def shape_ok(self) -> bool:
        return tuple(self.reference_shape) == tuple(self.candidate_shape)

    @property
    def passed(self) -> bool:
        """The task's verdict where one is declared, else the tensor check."""
        if not self.shape_ok:
            return False
        return self.task.passed if self.task is not None else self.tensor_passed

    @property
    def where(self) -> str:
        """Which part of the output the error is of, when it is judged per channel."""
        if self.channel_axis is None or self.worst_channel is None:
            return ""
        return f" (channel {self.worst_channel} along axis {self.channel_axis}, judged against its own range)"

    def brief(self, label: str) -> str:
        """What a one-line failure message says of it (describe() has every figure)."""
        if not self.shape_ok:
            return self.describe(label)
        tensor = (f"range-relative max error {self.range_rel_err:.3g} {'<=' if self.range_rel_err <= self.tolerance else '>'} "
                  f"tolerance {self.tolerance:.3g} ({self.mismatched}/{self.elements} elements off {self.over}"
                  f"{self.allowance}, cosine {self.cosine:.4f}){self.channel_note}")
        if self.task is not None:
            return f"{label} output '{self.name}' judged by its task, {self.task.describe()} {self.over}; tensor: {tensor}"
        return f"{label} output '{self.name}'{self.where}: {tensor}"

    @property
    def allowance(self) -> str:
        """The outliers a quantized recipe allows, where it allows any."""
        return f", up to {self.outliers} allowed" if self.outliers and self.task is None else ""

    @property
    def over(self) -> str:
        """Over how many verification inputs the figures are: every figure says it."""
        return f"over {self.samples} input{'' if self.samples == 1 else 's'}"

    def describe(self, label: str) -> str:
        if not self.shape_ok:
            return (f"{label} output '{self.name}': shape {list(self.candidate_shape)} "
                    f"!= PyTorch {list(self.reference_shape)}")
        top1 = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.1%}"
        p99 = "" if self.p99_rel_err is None else f", p99 {self.p99_rel_err:.3g}"
        tensor = (f"range-relative max error {self.range_rel_err:.3g} "
                  f"{'<=' if self.range_rel_err <= self.tolerance else '>'} tolerance {self.tolerance:.3g} "
                  f"({self.mismatched}/{self.elements} elements off {self.over}{self.allowance}; max abs "
                  f"{self.max_abs_err:.3g}, mean abs {self.mean_abs_err:.3g}, output range {self.output_range:.3g}{p99}, "
                  f"cosine {self.cosine:.6f}{top1}){self.channel_note}")
        if self.task is not None:
            return (f"{label} output '{self.name}' judged by its task, {self.task.describe()} {self.over}; "
                    f"tensor: {tensor}")
        return f"{label} output '{self.name}'{self.where}: {tensor}"


@dataclass(frozen=True)
class MicroCheck:
    """An int8_io file on TensorFlow Lite Micro's interpreter (the `tflite-micro` package)."""

    runs: bool
    message: str = ""                # why it does not run (the ops Micro lacks), or how it disagrees
    arena_bytes: int | None = None   # the tensor arena it allocated: what the device must reserve
    agrees: bool | None = None       # its outputs are the TFLite runtime's (within one quantization step)

    @property
    def ok(self) -> bool:
        return self.runs and self.agrees is not False


@dataclass(frozen=True)
class RuntimeCheck:
    """Does a TFLite file run where it goes: on the TFLite runtime in a process without TensorFlow
    (as on a phone), with XNNPACK (the runtime's default) and with the reference kernels (what runs
    where XNNPACK does not), both judged against PyTorch; the ops it uses; its median invoke time
    here (a figure, never gated); Micro for int8_io."""

    runs: bool
    message: str = ""
    kernels_agree: bool | None = None   # the reference kernels' outputs pass the recipe's check too
    kernels_diff: float | None = None   # max |XNNPACK - reference| / output range (a figure)
    ops: tuple[tuple[str, int], ...] = ()  # builtin op -> how many, most used first
    flex_ops: tuple[str, ...] = ()
    custom_ops: tuple[str, ...] = ()
    invoke_ms: float | None = None
    micro: MicroCheck | None = None
    quantized_tensors: int | None = None  # tensors of the recipe's quantized type (None: not a quantized recipe)

    @property
    def ok(self) -> bool:
        return self.runs and self.kernels_agree is not False and (self.micro is None or self.micro.ok)

    @property
    def problem(self) -> str:
        if not self.runs:
            return f"does not run on the TFLite runtime without TensorFlow: {self.message}"
        if self.kernels_agree is False:
            return f"passes with XNNPACK but not on the reference kernels: {self.message}"
        if self.micro is not None and not self.micro.ok:
            return f"does not run on TensorFlow Lite Micro: {self.micro.message}"
        return ""

    def describe(self) -> str:
        if not self.ok:
            return self.problem
        ops = ", ".join(f"{n} {k}" for n, k in self.ops[:6]) + (", ..." if len(self.ops) > 6 else "")
        parts = [f"runs without TensorFlow; {sum(k for _, k in self.ops)} ops ({ops})"]
        if self.quantized_tensors == 0:
            parts.append("nothing was quantized (TFLite keeps small tensors in float32): the file is float32's")
        if self.flex_ops or self.custom_ops:
            parts.append(f"Flex/custom ops: {', '.join(self.flex_ops + self.custom_ops)}")
        if self.kernels_agree:
            diff = f" (they differ by {self.kernels_diff:.2g} of the range)" if self.kernels_diff else ""
            parts.append(f"passes on XNNPACK and the reference kernels over 1 input (the first verification input){diff}")
        if self.invoke_ms is not None:
            parts.append(f"invoke {self.invoke_ms:.3g} ms")
        if self.micro is not None:
            parts.append(f"TFLite Micro runs it (arena {self.micro.arena_bytes:,} bytes)" if self.micro.arena_bytes
                         else "TFLite Micro runs it")
        return "; ".join(parts)


@dataclass(frozen=True)
class Deliverable:
    """One recipe's TFLite file and what verification found: its outputs against PyTorch, and
    whether it runs where it goes."""

    recipe: str                 # a name in recipes.RECIPES
    path: str
    bytes: int
    outputs: tuple[OutputComparison, ...] = ()  # empty until verified
    runtime: RuntimeCheck | None = None          # None until checked
    signature: Signature | None = None           # its inputs and outputs as the file declares them, once checked

    @property
    def label(self) -> str:
        return RECIPES[self.recipe].label if self.recipe in RECIPES else f"{self.recipe} TFLite"

    @property
    def arena_bytes(self) -> int | None:
        """The tensor arena TFLite Micro allocated for it (what a microcontroller must reserve)."""
        return self.runtime.micro.arena_bytes if self.runtime is not None and self.runtime.micro else None

    def device_view(self) -> str:
        """What a device sees of it: its signature and, on TFLite Micro, the arena it needs."""
        parts = [self.signature.describe()] if self.signature else []
        parts += [f"TFLite Micro arena {self.arena_bytes:,} bytes"] if self.arena_bytes else []
        return "; ".join(parts)

    @property
    def verified(self) -> bool:
        return bool(self.outputs)

    @property
    def numbers_pass(self) -> bool:
        return self.verified and all(c.passed for c in self.outputs)

    @property
    def passed(self) -> bool:
        """Its numbers pass and it runs where it goes (a file that needs Flex kernels is judged by
        the verdict, which knows whether the spec allows them)."""
        runtime = self.runtime
        return self.numbers_pass and (runtime is None or runtime.ok or (not runtime.runs and bool(runtime.flex_ops)))

    @property
    def worst(self) -> OutputComparison | None:
        return worst(self.outputs)


def worst(comparisons) -> OutputComparison | None:
    """The output that fails first: a wrong shape, else the largest error."""
    if not comparisons:
        return None
    return max(comparisons, key=lambda c: (not c.shape_ok, c.range_rel_err))


def labelled_comparisons(export: "ExportResult | None", saved: "SavedModelResult | None" = None,
                         deliverables: "tuple[Deliverable, ...]" = ()):
    """Every output comparison with its label, in the order checks are made and reported: ONNX,
    onnx2tf's TF model, then each TFLite file."""
    pairs = [("ONNX", c) for c in export.outputs] if export else []
    pairs += [("TF model (onnx2tf)", c) for c in saved.outputs] if saved else []
    return pairs + [(d.label, c) for d in deliverables for c in d.outputs]


@dataclass(frozen=True)
class Caveat:
    """A check that proves less than it seems: an output that hardly depends on the input (an
    untrained model with default BatchNorm statistics, a trained one fed inputs far from its data),
    which any converter emitting a constant would match."""

    output: str
    moved: float   # how far a second, different sample input moves it, relative to its range
    output_range: float
    reason: str

    def describe(self) -> str:
        if not self.output:  # of the whole model
            return self.reason
        return f"the numeric check of output '{self.output}' proves little: {self.reason}"


@dataclass(frozen=True)
class LoadResult:
    format: str
    seconds: float
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]
    caveats: tuple[Caveat, ...] = ()
    model_sha256: str = ""  # of the bytes the conversion loaded (the cache keys on them)


@dataclass(frozen=True)
class ExportResult:
    exporter: str
    opset: int
    onnx_path: str
    onnx_bytes: int
    input_shapes: tuple[tuple[int, ...], ...]
    attempts: tuple[str, ...]
    outputs: tuple[OutputComparison, ...]
    seconds: float
    fixes: tuple[Fix, ...] = ()


@dataclass(frozen=True)
class SavedModelResult:
    path: str
    layout: str
    # onnx input name -> (tflite signature name, permutation from torch to TFLite layout)
    input_names: tuple[tuple[str, str], ...]
    input_perms: tuple[tuple[int, ...], ...]
    output_names: tuple[tuple[str, str], ...]
    seconds: float
    pseudo_ops: tuple[str, ...] = ()
    onnx2tf_mode: str = "simplified"  # which of savedmodel.ONNX2TF_MODES converted it
    onnx_path: str = ""  # the graph onnx2tf converted: the prepared one, or the exported one (defaults)
    graph: "GraphResult | None" = None  # how the graph was prepared for onnx2tf
    # the TF model's float32 outputs against PyTorch, and how each is laid out (channels-last maps)
    outputs: tuple[OutputComparison, ...] = ()
    output_perms: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class LiteRTResult:
    """The litert engine's conversion (litert-torch: torch.export -> StableHLO -> TFLite, no ONNX, no
    TensorFlow), in place of onnx2tf's SavedModel: how its files' signature maps onto the model's
    inputs and outputs. The files keep PyTorch's layout, so every permutation is the identity."""

    source: str  # what was converted: "nn.Module", "ExportedProgram", "TorchScript via TS2EPConverter"
    input_names: tuple[tuple[str, str], ...]  # model input name -> signature key (args_0, ...)
    input_perms: tuple[tuple[int, ...], ...]
    output_names: tuple[tuple[str, str], ...]  # model output name -> signature key (output_0, ...)
    output_perms: tuple[tuple[int, ...], ...]
    seconds: float
    layout: str = "nchw"  # PyTorch's own


@dataclass(frozen=True)
class GraphResult:
    """The exported graph made ready for onnx2tf (stages/graph.py)."""

    nodes_before: int
    nodes_after: int
    simplify_seconds: float
    simplified: bool
    strict_reason: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A requested recipe whose file the TFLite converter would not build, and its words."""

    recipe: str
    reason: str

    @property
    def label(self) -> str:
        return RECIPES[self.recipe].label if self.recipe in RECIPES else f"{self.recipe} TFLite"

    def describe(self) -> str:
        return f"{self.label} could not be built: {self.reason}"


@dataclass(frozen=True)
class TFLiteResult:
    flex_ops: tuple[str, ...]  # the files themselves are the Result's deliverables
    seconds: float
    calibration: str | None = None  # what int8 recipes were calibrated on, when one was built
    random_calibration: bool = False  # samples generated from the input spec: not the model's data
    refused: tuple[Refusal, ...] = ()  # requested recipes the converter would not build (the others were)


@dataclass(frozen=True)
class VerifyResult:
    deployable: bool     # the chosen deliverable runs on the TFLite runtime without TensorFlow
    deploy_message: str
    seconds: float


@dataclass(frozen=True)
class NodeError:
    """One tensor of a candidate (the TF model, or the TFLite file) against its reference (onnxruntime,
    or the TF model), on the sample inputs."""

    node: str        # the ONNX node, or the TFLite op's output tensor
    op_type: str     # the ONNX op, or the TFLite op (FULLY_CONNECTED, ...)
    output: str
    shape: tuple[int, ...]
    max_abs_err: float | None  # None: not comparable (removed by onnx2tf, or shapes differ)
    output_range: float | None
    range_rel_err: float | None
    ambiguous: bool = False  # its shape reads the same in both layouts: compared in the better one


@dataclass(frozen=True)
class Divergence:
    """Where a float32 conversion first departs: the answer to a numeric_mismatch.

    `where` is decided first, on the final outputs. "precision": PyTorch's own float32 outputs are as
    far from float64 as the tolerance (no converter can do better). Else the TF model onnx2tf built
    is run on the sample inputs; if it already differs from PyTorch the error is onnx2tf's
    ("onnx2tf"), and `first` names the first ONNX node whose TF output departs; if it matches, the
    TFLite converter changed the numbers ("tflite"), and `first` names the first TFLite op whose
    output departs from the TF model's. "export": the ONNX file differs, not for want of precision.
    "unknown": the diagnosis found no divergence, or stopped before it could."""

    where: str
    first: NodeError | None
    tolerance: float
    nodes_compared: int
    table: str  # path of the per-node table in the artifacts
    tf_error: float | None = None  # the TF model's range-relative error against PyTorch
    ambiguous_before: str | None = None  # the first square tensor before `first`, whose layout no shape shows
    stopped: str | None = None  # why the diagnosis stopped before its end (its time or memory budget)
    seconds: float = 0.0
    float64_error: float | None = None  # PyTorch's own float32 outputs against float64 (range-relative)

    def describe(self) -> str:
        stopped = f"diagnosis stopped early ({self.stopped})" if self.stopped else ""
        if self.where == "precision":
            return (f"float32 precision, not the conversion: PyTorch's own float32 outputs differ from its float64 ones "
                    f"by range-relative {self.float64_error:.3g} (the output is ill-conditioned: a tiny range, or a "
                    f"large value subtracted), so no converter's float32 result can be held to {self.tolerance:g}; "
                    "widen that tolerance knowingly, or make the output better conditioned")
        conditioned = ""
        if self.float64_error is not None and self.float64_error > self.tolerance / 2:
            conditioned = (f"the output is ill-conditioned (PyTorch's own float32 result is off from float64 by "
                           f"range-relative {self.float64_error:.3g}), and the converted one much more so")
        if self.where == "export":
            return conditioned or (f"PyTorch's float32 outputs agree with float64 (range-relative "
                                   f"{self.float64_error:.3g}): the exported ONNX file itself computes something else"
                                   if self.float64_error is not None else "the exported ONNX file itself differs")
        if self.where == "onnx2tf":
            head = f"the TF model onnx2tf built already differs from PyTorch (range-relative {self.tf_error:.3g})"
        elif self.where == "tflite":
            head = (f"the TF model onnx2tf built matches PyTorch (range-relative {self.tf_error:.3g}): the TFLite "
                    "conversion changes the numbers")
        else:
            return stopped or f"no divergence found among {self.nodes_compared} compared tensors"
        if self.first is None:
            where = f"no single tensor departs among {self.nodes_compared} compared"
        else:
            n = self.first
            kind = "op" if self.where == "tflite" else "node"
            where = (f"first divergence at {kind} {n.node} ({n.op_type}), max err {n.max_abs_err:.3g} "
                     f"(range-relative {n.range_rel_err:.3g} > {self.tolerance:g})")
            if self.ambiguous_before:
                where += (f"; earlier square tensors read the same in both layouts and may hide where it starts "
                          f"(the first: {self.ambiguous_before})")
        return "; ".join(x for x in (head, where, conditioned, stopped) if x)


@dataclass(frozen=True)
class Result:
    model_id: str
    model_path: str
    status: str  # "passed" | "failed" | "gone"
    failure: Failure | None = None
    load: LoadResult | None = None
    export: ExportResult | None = None
    savedmodel: SavedModelResult | None = None
    tflite: TFLiteResult | None = None
    verify: VerifyResult | None = None
    # every TFLite file built (float32 first), verified or not; `delivered` names the recipe
    # whose file became the deliverable (`deliverable`, its path in the deliverables folder)
    deliverables: tuple[Deliverable, ...] = ()
    requested: tuple[str, ...] = ()  # the recipes asked for, in order of preference
    delivered: str | None = None
    deliverable: str | None = None
    outcome: Outcome | None = None  # set by the test that judged it
    cache_hit: bool = False  # restored from the conversion cache: an unchanged model, not converted again
    artifacts_bytes: int | None = None  # what its artifacts folder keeps on disk
    fixes: tuple[Fix, ...] = ()
    divergence: "Divergence | None" = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    network_attempts: tuple[str, ...] = ()
    onnx2tf_runs: int = 0  # conversions by onnx2tf it took (a retry in another mode, a second pseudo-op pass)
    model_sha256: str = ""  # of the bytes the child read, also when loading them failed (the cache keys on them)
    versions: dict[str, str] = field(default_factory=dict)
    engine: str = "onnx2tf"  # the conversion route that made the files (pipeline.ENGINES)
    litert: LiteRTResult | None = None  # the litert engine's conversion, in place of `savedmodel`
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def signature(self) -> "SavedModelResult | LiteRTResult | None":
        """How the TFLite files' signature maps onto the model's inputs and outputs, whichever engine made them."""
        return self.savedmodel or self.litert

    def deliverable_of(self, recipe: str | None) -> Deliverable | None:
        return next((d for d in self.deliverables if d.recipe == recipe), None)

    @property
    def caveats(self) -> tuple[Caveat, ...]:
        """Checks that prove less than they seem: outputs that hardly depend on the input, and int8
        figures from random calibration."""
        found = self.load.caveats if self.load else ()
        if self.tflite is not None and self.tflite.random_calibration:
            found += (Caveat("", float("nan"), float("nan"), f"int8 calibrated on {self.tflite.calibration}"),)
        return found

    @property
    def tf_error(self) -> float | None:
        """The TF model's float32 error against PyTorch (its worst output), once checked."""
        found = worst(self.savedmodel.outputs) if self.savedmodel and self.savedmodel.outputs else None
        return found.range_rel_err if found else None

    @property
    def chosen(self) -> Deliverable | None:
        """The delivered file; for a model that failed, the first requested recipe (what it was asked for)."""
        return self.deliverable_of(self.delivered) or next(
            (d for r in self.requested for d in self.deliverables if d.recipe == r), None)

    @classmethod
    def gone(cls, model_id: str) -> "Result":
        return cls(model_id=model_id, model_path="", status="gone", outcome=Outcome.GONE)

    @classmethod
    def failed(cls, model_id: str, model_path: str, kind: FailureKind, stage: str, message: str,
               **fields) -> "Result":
        """A Result that only carries its (normalised) failure, plus whatever was measured."""
        return cls(model_id=model_id, model_path=model_path, status="failed",
                   failure=Failure(kind, stage, normalise_message(message)), **fields)

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "Result":
        return build(cls, data)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> "Result":
        return cls.from_dict(json.loads(Path(path).read_text()))


