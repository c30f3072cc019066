"""What one model's conversion has found so far: a typed, frozen checkpoint that each step of the
pipeline's table takes and returns a new copy of, and that a hand-over to a fresh interpreter
writes and reads back (`save` / `load`) through protocol.py's one serializer.

Every field is either carried by the hand-over or declared transient (a runtime handle: the model
as loaded, its bytes); the arrays travel beside the JSON in protocol.SampleArrays's one spelling.
tests/unit/test_checkpoint.py proves that every field survives a round trip, so a new field cannot
be forgotten.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..failures import FailureKind
from ..protocol import Job, Progress, SampleArrays, build, plain, write_json_atomic
from ..results import (
    Deliverable,
    Divergence,
    ExportResult,
    Fix,
    GraphResult,
    LiteRTResult,
    LoadResult,
    SavedModelResult,
    TFLiteResult,
    VerifyResult,
)
from ..spec import InputSpec, ModelSpec

TRANSIENT = {"transient": True}  # field metadata: a runtime handle, never written


@dataclass(frozen=True)
class Context:
    """What a conversion is asked to do, fixed for its whole run (the job's, not the model's findings),
    and its two handles on the outside: progress.json, and the hand-over to a fresh interpreter."""

    spec: ModelSpec
    artifacts: Path
    threads: int
    progress: Progress
    started: float  # time.monotonic() at the start of the conversion, for what is left of the timeout
    memory_limit_mb: float = 0.0  # the ceiling the parent enforces (0: unknown)
    diagnosis_share: float = 0.25
    fail_on_vacuous: bool = False
    engine: str = "onnx2tf"  # whose rows of the step table run (spec.ENGINES)
    diagnose_later: bool = False  # a float32 diagnosis is prepared, and run by the parent only if litert fails too
    # (context, checkpoint, why) -> None: replaces this interpreter, or returns having not (see handover.py)
    hand_over: typing.Callable | None = None

    @property
    def seconds_left(self) -> float:
        import time

        return self.spec.timeout - (time.monotonic() - self.started)

    @classmethod
    def of(cls, job: Job, progress: Progress, started: float, hand_over: typing.Callable | None = None) -> "Context":
        """The context of `job`: its settings are taken by name, so that a setting the job carries
        is one field here and one there (tests/unit/test_checkpoint.py checks that none is dropped)."""
        spec = ModelSpec.from_dict(job.spec)
        return cls(spec, Path(job.artifacts_dir), progress=progress, started=started, hand_over=hand_over,
                   **{name: getattr(job, name) for name in JOB_SETTINGS})


# the job's fields a step reads through its context (the rest: the spec, parsed; where; who to outlive)
JOB_SETTINGS = ("threads", "memory_limit_mb", "diagnosis_share", "fail_on_vacuous", "engine", "diagnose_later")


@dataclass(frozen=True)
class BuiltSavedModel:
    """A SavedModel built and checked against PyTorch, its TFLite conversion still to come (what a
    hand-over before that conversion leaves the next interpreter)."""

    mode: str  # onnx2tf's mode that built it
    saved: SavedModelResult
    pseudo_ops: tuple[str, ...]
    pseudo_fixes: tuple[Fix, ...]  # the pseudo-op fixes it was built with, recorded once it converts


@dataclass(frozen=True)
class Attempt:
    """One run of an engine's bounded retry loop (onnx2tf's mode ladder): the mode, and how it
    ended (kind None: it converted). `saved`: the TF model its float32 check judged, kept for the
    diagnosis; `tf_outputs` (not written): that model's outputs, PyTorch's layout."""

    mode: str
    runs: int = 0  # onnx2tf conversions it took (a second Flex pass is one more)
    kind: FailureKind | None = None
    stage: str = ""  # where it failed
    message: str = ""
    saved: SavedModelResult | None = None
    tf_outputs: tuple = field(default=(), compare=False, metadata=TRANSIENT)
    result: object = field(default=None, compare=False, repr=False, metadata=TRANSIENT)  # what a converted one made

    @property
    def converted(self) -> bool:
        return self.kind is None


@dataclass(frozen=True)
class Problem:
    """A verdict a step reached that fails the model: raised by the explain step, after the
    explanation its `explain` names ("" none, "tf": onnx2tf's TF model is wrong, "tflite": a TFLite
    file is wrong and the TF model is right, "onnx": the exported file itself is off)."""

    kind: FailureKind
    message: str
    explain: str = ""
    recipe: str | None = None  # the file the verdict was on (explain "tflite")


@dataclass(frozen=True)
class Checkpoint:
    model_sha256: str = ""  # of the bytes read, known before loading them can fail
    inputs: tuple[InputSpec, ...] = ()  # the model's inputs, from the load step on
    output_names: tuple[str, ...] = ()
    flatten: bool = False  # its outputs are a structure the export flattens
    load: LoadResult | None = None
    export: ExportResult | None = None
    graph: GraphResult | None = None  # the exported graph prepared for onnx2tf (None: not used)
    graph_fixes: tuple[Fix, ...] = ()  # the rewrites that made it, recorded once onnx2tf converted it
    built: BuiltSavedModel | None = None  # a SavedModel awaiting its TFLite conversion
    attempts: tuple[Attempt, ...] = ()
    onnx2tf_runs: int = 0
    savedmodel: SavedModelResult | None = None
    litert: LiteRTResult | None = None  # the litert engine's conversion, in place of the SavedModel
    tflite: TFLiteResult | None = None
    deliverables: tuple[Deliverable, ...] = ()  # the TFLite files built, then verified
    verify: VerifyResult | None = None
    float32: Deliverable | None = None  # the float32 file built to explain or repair a quantized one, when not requested
    delivered: str | None = None  # the recipe whose file verified first, in the requested order
    fixes: tuple[Fix, ...] = ()
    divergence: Divergence | None = None
    problem: Problem | None = None
    calibration_note: str | None = None
    random_calibration: bool = False
    steps_done: tuple[str, ...] = ()  # the table's steps done, by this interpreter or the one it replaced
    samples: SampleArrays = field(default_factory=SampleArrays, compare=False, metadata=TRANSIENT)
    # the bytes read, handed to the load step once: it empties the list, so that they are freed as soon
    # as the model is loaded (a frozen checkpoint the loop still holds would keep them to the step's end)
    model_bytes: list = field(default_factory=list, compare=False, repr=False, metadata=TRANSIENT)
    loaded: object = field(default=None, compare=False, repr=False, metadata=TRANSIENT)  # load.LoadedModel

    @property
    def signature(self) -> SavedModelResult | LiteRTResult | None:
        """How the TFLite files' signature maps onto the model's inputs and outputs (either engine's)."""
        return self.savedmodel or self.litert

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def with_fixes(self, *fixes: Fix) -> "Checkpoint":
        """These fixes recorded, each once."""
        kept = list(self.fixes)
        kept += [f for f in fixes if f not in kept]
        return dataclasses.replace(self, fixes=tuple(kept))

    def to_dict(self) -> dict:
        """The fields a hand-over carries, as plain JSON (dataclasses.asdict would deep-copy the
        transient ones: the model and its arrays)."""
        return {f.name: plain(_asdict(getattr(self, f.name))) for f in dataclasses.fields(self) if not _transient(f)}

    @classmethod
    def from_dict(cls, data: dict, samples: SampleArrays = SampleArrays()) -> "Checkpoint":
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: build(hints[f.name], data[f.name]) for f in dataclasses.fields(cls)
                      if not _transient(f) and f.name in data}, samples=samples)


def _transient(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("transient"))


def _asdict(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _asdict(getattr(value, f.name)) for f in dataclasses.fields(value) if not _transient(f)}
    if isinstance(value, (list, tuple)):
        return [_asdict(v) for v in value]
    return value


def save(checkpoint: Checkpoint, state: Path, arrays: Path, **extra) -> None:
    """The checkpoint as JSON at `state` (with `extra` plain values beside it), its arrays at `arrays`."""
    checkpoint.samples.save(arrays)
    write_json_atomic(state, {"checkpoint": checkpoint.to_dict(), **extra})


def load(state: Path, arrays: Path) -> tuple[Checkpoint, dict]:
    """What save wrote: the checkpoint and the extra values."""
    data = json.loads(Path(state).read_text())
    return Checkpoint.from_dict(data.pop("checkpoint"), SampleArrays.load(arrays)), data
