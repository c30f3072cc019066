"""Stage results and the per-model Result: frozen dataclasses that cross from the child to the
parent (result.json), from workers to the controller, into the cache, the summaries and the merge,
serialised by protocol.py. A Result is the one record of a model: reports, the terminal summary,
JUnit properties and the baseline all read it; JSON is parsed only where a file is read.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from pathlib import Path

from .checks import OutputComparison, RuntimeCheck, worst
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
class LayerError:
    """One layer of a quantized file against the float32 file's (stages/layers.py): its output's error
    relative to each channel's spread, over the verification inputs, and what it adds to its inputs'."""

    name: str        # its output tensor in the float32 file (what a recipe keeps in float32 by)
    op: str          # CONV_2D, FULLY_CONNECTED, ...
    error: float
    own: float       # its error less its inputs' largest: the ranking
    quantized: bool  # it runs on integers in this file
    weights: int = 0  # the integer weight elements it reads (what keeping it in float32 costs the quantized share)

    def describe(self, kept: tuple[str, ...] = ()) -> str:
        """`kept`: the layers a repair kept in float32 (marked, so the ranking shows what it chose)."""
        return f"{self.op} '{self.name}' adds {self.own:.3g} (output error {self.error:.3g})" + (
            ", kept in float32 by the repair" if self.name in kept else "" if self.quantized else ", runs in float32")


@dataclass(frozen=True)
class Repair:
    """A quantized recipe that missed, rebuilt with its worst layers kept in float32 (stages/repair.py)."""

    kept_float: tuple[str, ...]  # the layers kept in float32, by output tensor, in the order they were added
    quantized_share: float       # of the int8 weight elements of the plain recipe's file, the share still int8
    plain_bytes: int
    plain_miss: str              # why the plain file was refused
    rebuilds: int                # files built and verified to find it
    passed: bool = False         # the rebuilt file passed: it is delivered as the recipe
    note: str = ""               # why no rebuilt file passed

    def describe(self, label: str, size: int) -> str:
        layers = len(self.kept_float)
        return (f"{label} with {layers} layer{'s' * (layers != 1)} kept in float32 ({', '.join(self.kept_float[:3])}"
                f"{', ...' if layers > 3 else ''}): {self.quantized_share:.1%} of the plain file's int8 weights still int8, "
                f"{size / 1e6:.2f} MB against {self.plain_bytes / 1e6:.2f} MB; the plain file: {self.plain_miss}")


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
    layers: tuple[LayerError, ...] = ()          # a quantized file that missed or was repaired: its worst layers
    repair: Repair | None = None                 # set when this file is the recipe rebuilt with layers kept float

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
    def kept_float(self) -> tuple[str, ...]:
        """The layers a repair kept in float32 to make this file pass (none for a plain file)."""
        return self.repair.kept_float if self.repair is not None and self.repair.passed else ()

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
    engine: str = "onnx2tf"  # the conversion route that made the files (spec.ENGINES)
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


