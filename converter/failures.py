"""The small vocabulary of failures, shared by both sides: kinds, stages, one-line messages,
and the one way a stage turns a library's exception into its own (`stage_step`).
"""
from __future__ import annotations

import contextlib
import enum
import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class Stage(str, enum.Enum):
    """Where a model's conversion was when it failed (SPEC: before a child ran; TEST: the test
    process died around it)."""

    SPEC = "spec"
    LOAD = "load"
    EXPORT = "export"
    SAVEDMODEL = "savedmodel"
    TFLITE = "tflite"
    VERIFY = "verify"
    TEST = "test"

    def __str__(self) -> str:
        return self.value

    @property
    def default_kind(self) -> "FailureKind":
        """What an exception no stage understood means here (a library's own error)."""
        return _STAGE_KINDS.get(self, FailureKind.CRASH)


class FailureKind(str, enum.Enum):
    """Each kind carries what a run does with it, declared once in its row:

    - `model`: the model's own (its result is cached, and an earlier deliverable is removed since
      it no longer matches a model that fails so), or not (it may be the machine's: a slow or
      loaded machine, memory, a full disk; not cached);
    - `rejudged`: a verdict on figures, so a cached record of it is judged again against today's
      tolerances (verdict.judge) rather than replayed;
    - `retried`: what a cheaper onnx2tf mode can cause (a failed conversion, ops left for Flex, a
      layout it could not map, wrong float32 numbers): the next mode is tried;
    - `wrong_numbers`: the TF model converted but computes other numbers (a stricter mode may
      mend that; the last one, `defaults`, only changes what fails);
    - `next_step`: what the person reading the failure does about it, shown under a failing
      model's message; the README's failure table says the same, word for word (a test holds
      them together).

    A new kind is one row; tests walk every member."""

    def __new__(cls, value: str, model: bool, next_step: str, rejudged: bool = False, retried: bool = False,
                wrong_numbers: bool = False):
        member = str.__new__(cls, value)
        member._value_ = value
        member.model, member.rejudged, member.retried, member.wrong_numbers = model, rejudged, retried, wrong_numbers
        member.next_step = next_step
        return member

    def __str__(self) -> str:
        return self.value

    @property
    def cached(self) -> bool:
        return self.model

    @property
    def machine(self) -> bool:
        """It may be the machine's, not the model's: not cached, and a rerun may pass."""
        return not self.model

    @property
    def removes_deliverable(self) -> bool:
        """A model that fails so no longer matches what an earlier run delivered. A full disk, or a
        slot folder that cannot be used, an engine not installed, says nothing about the model: the earlier deliverable stays."""
        return self not in (FailureKind.DISK_FULL, FailureKind.NO_SLOT, FailureKind.ENGINE_MISSING)

    @property
    def another_engine_may_mend(self) -> bool:
        """onnx2tf's route itself failed (its export, its conversion, the TFLite converter's crash on its
        SavedModel, its numbers): the litert engine, which takes neither ONNX nor TensorFlow, may convert
        the model. Not the model's file, its spec, the machine's limits or a check that proves nothing."""
        return self.retried or self in (FailureKind.EXPORT_ERROR, FailureKind.CRASH)

    #  value               model  next_step                                       rejudged retried wrong_numbers
    LOAD_ERROR = ("load_error", True, "re-save the model; check the factory and its kwargs")
    UNTRUSTED_PICKLE = ("untrusted_pickle", True, "if you trust it, `trust_pickle = true`; better, save TorchScript, "
                                                  "a plain `.pt2` or a state_dict")
    SPEC_ERROR = ("spec_error", True, "fix the named file and key")
    EXPORT_ERROR = ("export_error", True, "replace the op, or fix the input size (adaptive pooling: see "
                                          "\"Troubleshooting the two classics\" in the README)")
    SAVEDMODEL_ERROR = ("savedmodel_error", True, "the log has onnx2tf's reason; try `layout = \"nchw\"`, static "
                                                  "shapes, `pseudo_ops`", False, True)
    TFLITE_ERROR = ("tflite_error", True, "see the log; for Micro, replace the op or deliver `int8` instead", False, True)
    FLEX_OPS = ("flex_ops", True, "replace the op in the model, or `allow_flex = true` and ship the Flex runtime",
                False, True)
    SHAPE_MISMATCH = ("shape_mismatch", True, "usually a layout problem: try `layout = \"nchw\"`", False, True, True)
    NUMERIC_MISMATCH = ("numeric_mismatch", True,
                        "float32 bad: a conversion bug, with the node to report upstream (`diagnosis/node_errors.md`); "
                        "only a quantized recipe bad (the message says it is the quantization): declare what the "
                        "output means (`task = \"classification\"`: the file is then judged by its answers), list a "
                        "fallback recipe (`deliverables = [\"drq\", \"fp16\"]`), give real calibration samples for "
                        "int8, or judge a mixed-range output per channel", True, True, True)
    VACUOUS_CHECK = ("vacuous_check", True, "recalibrate the model's BatchNorm statistics, give sample inputs in its "
                                            "data's `range`, or accept the warning")
    TIMEOUT = ("timeout", False, "raise `timeout`, or look at the log for where it hung")
    OUT_OF_MEMORY = ("out_of_memory", False, "more memory (`memory_limit_mb`, fewer `-n` workers), or a smaller "
                                             "input shape")
    CRASH = ("crash", False, "the log's last lines; rerun alone with `-k`")
    DISK_FULL = ("disk_full", False, "free space, rerun")
    NO_SLOT = ("no_slot", False, "remove the lock files the message names, rerun")  # the model never started
    ENGINE_MISSING = ("engine_missing", False, "set up the engine's environment (README: Quick start), or point "
                                               "`--tflite-litert-python` at its interpreter")  # the model never started


_STAGE_KINDS = {Stage.LOAD: FailureKind.LOAD_ERROR, Stage.EXPORT: FailureKind.EXPORT_ERROR,
                Stage.SAVEDMODEL: FailureKind.SAVEDMODEL_ERROR, Stage.TFLITE: FailureKind.TFLITE_ERROR,
                Stage.VERIFY: FailureKind.TFLITE_ERROR}

MEMORY_ADVICE = ("give the conversion more memory (memory_limit_mb, --tflite-memory-limit-mb, fewer -n "
                 "workers) or convert with a smaller input shape")
MEMORY_MARKERS = ("bad_alloc", "bad allocation", "MemoryError", "Cannot allocate memory", "OOM when allocating")


def is_memory_error(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(m in f"{type(exc).__name__}: {exc}" for m in MEMORY_MARKERS)


DISK_ADVICE = "free space on that disk, or give the run other folders (--tflite-reports-dir, --tflite-dir, TMPDIR)"
DISK_MARKERS = ("No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(m in f"{exc}" for m in DISK_MARKERS)


def disk_full_message(exc: BaseException, during: str) -> str:
    where = getattr(exc, "filename", None)
    place = f" writing {Path(where).name} in {Path(where).parent}" if where else ""
    return f"no space left on the disk{place} during {during}; {DISK_ADVICE}"


def reraise_if_memory(exc: BaseException) -> None:
    """Stages wrap library errors in their own kind; running out of memory or disk must stay what it is."""
    if is_memory_error(exc) or is_disk_full(exc):
        raise exc


# first lines that only say where an error happened, and where the cause is then: the line after
# (a Keras layer's error), or the last line (TorchScript's interpreter, a tf.function's user code)
_WRAPPERS = {"Exception encountered when calling layer": "next", "in user code:": "last",
             "The following operation failed in the TorchScript interpreter": "last"}
_NOT_A_CAUSE = re.compile(r'^(File "|at |#|\^|~|Call arguments received|\u2022|- |Traceback )')
_TYPED = re.compile(r"^[A-Za-z_.]*(Error|Exception):\s")


def first_line(exc: BaseException) -> str:
    """`Type: the line that says what went wrong`: the first non-empty line, or, where that line
    only says where it happened, the cause below it (TorchScript puts it last: 'RuntimeError:
    Expected 4-dimensional input ... got 3-dimensional input of size [1, 3, 32]')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    where = next((rule for wrapper, rule in _WRAPPERS.items() if wrapper in lines[0]), None)
    causes = [ln for ln in lines[1:] if not _NOT_A_CAUSE.match(ln) and not any(w in ln for w in _WRAPPERS)]
    if where is None or not causes:
        return f"{type(exc).__name__}: {lines[0]}"
    if where == "last":
        cause = causes[-1]
        return cause if _TYPED.match(cause) else f"{type(exc).__name__}: {cause}"
    return f"{type(exc).__name__}: {lines[0].rstrip('.')}: {causes[0]}"


class ConversionError(Exception):
    """Raised by a stage when it fails in a way it understands (`ops`: the ops it names)."""

    def __init__(self, kind: FailureKind, message: str, ops: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.ops = ops


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (onnx2tf colours its warnings and errors)."""
    return _ANSI.sub("", text)
_HEX = re.compile(r"0x[0-9a-fA-F]{6,}")
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+([\w.+-]+)")
_WIN_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\\\s:'\"]+\\)*([^\\\s:'\"]+)")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?%?")


def normalise_message(text: str, limit: int = 400) -> str:
    """One stable line: no colour codes, no addresses, no machine-specific paths.

    CI diffs these lines between runs, so anything that changes from run to run
    (tmp folders, object ids) is replaced by a placeholder.
    """
    text = strip_ansi(str(text))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else "(no message)"
    line = _HEX.sub("0x…", line)
    line = _ABS_PATH.sub(r"…/\1", line)
    line = _WIN_PATH.sub(r"…\\\1", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


LINE_STYLES = {"report": ("", ": "), "terminal": ("", " "), "verdict": (" failed", ": ")}  # (after the stage, before the message)


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    stage: Stage
    message: str

    def __post_init__(self):  # "load" from a progress file or a caller reads as Stage.LOAD
        object.__setattr__(self, "stage", Stage(self.stage))

    def line(self, model_id: str | None = None, *, style: str = "report") -> str:
        """The one way a failure is written, wherever it is shown, after `model: ` when given.
        The style only says how the stage meets the message (LINE_STYLES): `report` for summary.md,
        the HTML page and the baseline's lines (`load [crash]: ...`), `terminal` for the terminal
        summary (`load [crash] ...`, as CI logs have always read it), `verdict` for a test's own
        verdict: an assertion, JUnit's message, the one-model CLI (`load failed [crash]: ...`)."""
        verb, separator = LINE_STYLES[style]
        text = f"{self.stage}{verb} [{self.kind.value}]{separator}{self.message}"
        return text if model_id is None else f"{model_id}: {text}"

    def one_line(self, model_id: str) -> str:
        """The failure as a test's verdict (`m: load failed [crash]: ...`)."""
        return self.line(model_id, style="verdict")

    @property
    def signature(self) -> str:
        """What the baseline compares: kind, stage and the message without its figures
        (a ceiling that depends on the machine, an error's last digit), which vary run to run."""
        return f"{self.kind.value}@{self.stage}: {_NUMBER.sub('#', self.message)}"


@contextlib.contextmanager
def stage_step(kind: FailureKind, what: str, describe: Callable[[BaseException], str] = first_line):
    """One step of a stage: a library's exception becomes a ConversionError of `kind` saying
    `what: <describe(exc)>` (its first line by default), chained so that convert.log keeps the
    library's own traceback. Running out of memory stays a memory error; a ConversionError
    passes through."""
    try:
        yield
    except ConversionError:
        raise
    except Exception as exc:
        reraise_if_memory(exc)
        raise ConversionError(kind, f"{what}: {describe(exc)}") from exc
