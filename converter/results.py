"""Stage results, the per-model Result and the small vocabulary of failure kinds.

Everything that crosses a process boundary (child -> parent, worker -> controller,
run -> baseline) is one of these frozen dataclasses, serialised with to_dict/from_dict.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import re
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1


class FailureKind(str, enum.Enum):
    LOAD_ERROR = "load_error"
    UNTRUSTED_PICKLE = "untrusted_pickle"
    SPEC_ERROR = "spec_error"
    EXPORT_ERROR = "export_error"
    SAVEDMODEL_ERROR = "savedmodel_error"
    TFLITE_ERROR = "tflite_error"
    FLEX_OPS = "flex_ops"
    SHAPE_MISMATCH = "shape_mismatch"
    NUMERIC_MISMATCH = "numeric_mismatch"
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    CRASH = "crash"


MEMORY_ADVICE = ("give the conversion more memory (memory_limit_mb, --memory-limit-mb, fewer -n "
                 "workers) or convert with a smaller input shape")
MEMORY_MARKERS = ("bad_alloc", "bad allocation", "MemoryError", "Cannot allocate memory", "OOM when allocating")


def is_memory_error(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(m in f"{type(exc).__name__}: {exc}" for m in MEMORY_MARKERS)


def reraise_if_memory(exc: BaseException) -> None:
    """Stages wrap library errors in their own kind; running out of memory must stay out_of_memory."""
    if is_memory_error(exc):
        raise exc


def first_line(exc: BaseException) -> str:
    """`Type: first non-empty line`: many torch errors start with a newline, which would leave
    a one-line message saying only 'RuntimeError:'."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class ConversionError(Exception):
    """Raised by a stage when it fails in a way it understands (`ops`: the ops it names)."""

    def __init__(self, kind: FailureKind, message: str, ops: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.ops = ops


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEX = re.compile(r"0x[0-9a-fA-F]{6,}")
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+([\w.+-]+)")
_WIN_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\\\s:'\"]+\\)*([^\\\s:'\"]+)")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")


def normalise_message(text: str, limit: int = 400) -> str:
    """One stable line: no colour codes, no addresses, no machine-specific paths.

    CI diffs these lines between runs, so anything that changes from run to run
    (tmp folders, object ids) is replaced by a placeholder.
    """
    text = _ANSI.sub("", str(text))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else "(no message)"
    line = _HEX.sub("0x…", line)
    line = _ABS_PATH.sub(r"…/\1", line)
    line = _WIN_PATH.sub(r"…\\\1", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    stage: str
    message: str

    def one_line(self, model_id: str) -> str:
        return f"{model_id}: {self.stage} failed [{self.kind.value}]: {self.message}"

    @property
    def signature(self) -> str:
        """What the baseline compares: kind, stage and the message without its figures
        (a ceiling that depends on the machine, an error's last digit), which vary run to run."""
        return f"{self.kind.value}@{self.stage}: {_NUMBER.sub('#', self.message)}"


@dataclass(frozen=True)
class Fix:
    """A known fix the pipeline applied by itself (and verified like everything else)."""

    name: str    # flatten_outputs | pseudo_ops | pt2_legacy_trace
    detail: str  # e.g. "erf", or "dict -> out, aux"
    reason: str  # why it was needed, for the report

    @property
    def label(self) -> str:
        return f"{self.name}:{self.detail}" if self.detail else self.name


@dataclass(frozen=True)
class OutputComparison:
    """One output of a candidate (ONNX, fp32 or DRQ TFLite) against PyTorch."""

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

    @property
    def shape_ok(self) -> bool:
        return tuple(self.reference_shape) == tuple(self.candidate_shape)

    @property
    def passed(self) -> bool:
        return self.shape_ok and self.range_rel_err <= self.tolerance

    def describe(self, label: str) -> str:
        if not self.shape_ok:
            return (f"{label} output '{self.name}': shape {list(self.candidate_shape)} "
                    f"!= PyTorch {list(self.reference_shape)}")
        top1 = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.1%}"
        return (f"{label} output '{self.name}': range-relative max error {self.range_rel_err:.3g} "
                f"{'<=' if self.passed else '>'} tolerance {self.tolerance:.3g} "
                f"({self.mismatched}/{self.elements} elements off; max abs {self.max_abs_err:.3g}, "
                f"mean abs {self.mean_abs_err:.3g}, output range {self.output_range:.3g}, "
                f"cosine {self.cosine:.6f}{top1})")


def labelled_comparisons(export: "ExportResult | None", verify: "VerifyResult | None"):
    """Every output comparison with its label, in the order checks are made and reported."""
    pairs = [("ONNX", c) for c in export.outputs] if export else []
    if verify:
        pairs += [("float32 TFLite", c) for c in verify.fp32] + [("DRQ TFLite", c) for c in verify.drq]
    return pairs


@dataclass(frozen=True)
class LoadResult:
    format: str
    seconds: float
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...]


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


@dataclass(frozen=True)
class TFLiteResult:
    drq_path: str
    fp32_path: str
    drq_bytes: int
    fp32_bytes: int
    flex_ops: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class VerifyResult:
    fp32: tuple[OutputComparison, ...]
    drq: tuple[OutputComparison, ...]
    deployable: bool
    deploy_message: str
    seconds: float
    # per output: how the TFLite output is laid out relative to PyTorch's (channels-last maps)
    output_perms: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class NodeError:
    """One ONNX node's output in the TF model against onnxruntime's, on the sample inputs."""

    node: str
    op_type: str
    output: str
    shape: tuple[int, ...]
    max_abs_err: float | None  # None: not comparable (removed by onnx2tf, or shapes differ)
    output_range: float | None
    range_rel_err: float | None


@dataclass(frozen=True)
class Divergence:
    """Where a float32 conversion first departs from ONNX: the answer to a numeric_mismatch."""

    first: NodeError | None  # None: every node matched, the TFLite conversion itself differs
    tolerance: float
    nodes_compared: int
    table: str  # path of the per-node table in the artifacts

    def describe(self) -> str:
        if self.first is None:
            return (f"every one of {self.nodes_compared} compared nodes of the TF model matches ONNX: the "
                    "difference arises in the TFLite conversion")
        n = self.first
        return (f"first divergence at node {n.node} ({n.op_type}), max err {n.max_abs_err:.3g} "
                f"(range-relative {n.range_rel_err:.3g} > {self.tolerance:g})")


@dataclass(frozen=True)
class Result:
    model_id: str
    model_path: str
    status: str  # "passed" | "failed"
    failure: Failure | None = None
    load: LoadResult | None = None
    export: ExportResult | None = None
    savedmodel: SavedModelResult | None = None
    tflite: TFLiteResult | None = None
    verify: VerifyResult | None = None
    deliverable: str | None = None
    fixes: tuple[Fix, ...] = ()
    divergence: "Divergence | None" = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    network_attempts: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return self.status == "passed"

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
        return _build(cls, data)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> "Result":
        return cls.from_dict(json.loads(Path(path).read_text()))


def plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'inf' / 'nan': strict JSON has no such numbers
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _build(tp, value):
    """Rebuild a (nested) dataclass from the plain data that _plain produced."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner[0], value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: _build(hints[k], v) for k, v in value.items() if k in names})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v) for v in value)
        return tuple(_build(a, v) for a, v in zip(args, value))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, str):
        return float(value)
    return value


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file, as every other tool does


def write_json_atomic(path: Path, data) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder, then os.replace: readers never see half a file.

    mkstemp creates its file 0600; the final file gets the mode open() would have given it,
    so a CI web server or a colleague can read deliverables and summaries."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
