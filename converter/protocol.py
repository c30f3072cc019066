"""The files the parent and the conversion child speak through, and how they are written.

The parent writes `job.json` (what to convert, with which threads, which processes to outlive
never); the child keeps `progress.json` current (the stage it is in, seconds so far, peak
memory) and writes `result.json` last. Every file is written atomically, with the mode the
umask gives; every dataclass crosses as plain JSON (`plain`) and is rebuilt from it (`build`).
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
RESULT_FILE = "result.json"
WAITING_FILE = "waiting.json"  # a model waiting for one of the machine's conversion slots (slots.py)
SAMPLES_FILE = "samples.npz"  # the sample inputs, PyTorch's outputs and ONNX's and the TF model's (the cache)
LOG_FILE = "convert.log"  # the child's whole log: the library's tracebacks, onnx2tf's words


@dataclass(frozen=True)
class Job:
    spec: dict
    artifacts_dir: str
    threads: int
    guardians: list[int]  # pids the child must not outlive (see lifeline.py)
    memory_limit_mb: float = 0.0  # the ceiling the parent enforces on the child's whole process tree
    diagnosis_share: float = 0.25  # of the timeout and of the ceiling, that a float32 diagnosis may take
    fail_on_vacuous: bool = False  # an output that hardly depends on the input fails the model
    engine: str = "onnx2tf"  # the conversion route whose rows the child runs (spec.ENGINES)
    diagnose_later: bool = False  # engine auto: a float32 diagnosis waits for litert's outcome (engines.py)

    def write(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def read(cls, path: Path) -> "Job":
        return build(cls, json.loads(Path(path).read_text()))


class Progress:
    """The child's side of progress.json: the stage it is in, and the seconds each took."""

    def __init__(self, path: Path, peak_rss_mb: typing.Callable[[], float] = lambda: 0.0):
        self.path, self.stage_seconds, self.stage, self._t = path, {}, None, None
        self._peak = peak_rss_mb

    def start(self, stage: str) -> None:
        self.finish()
        self.stage, self._t = stage, time.perf_counter()
        write_json_atomic(self.path, {"stage": stage, "stage_seconds": self.stage_seconds,
                                      "peak_rss_mb": self._peak()})

    def finish(self) -> None:
        if self.stage and self._t is not None:  # a stage run twice (a fix's second pass) adds up
            spent = self.stage_seconds.get(self.stage, 0.0) + time.perf_counter() - self._t
            self.stage_seconds[self.stage] = round(spent, 3)
            self._t = None


def read_progress(path: Path) -> dict:
    """The parent's side: what the child last wrote, {} when it wrote nothing (yet)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


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


def build(tp, value):
    """Rebuild a (nested) dataclass from the plain data that _plain produced."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return build(inner[0], value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: build(hints[k], v) for k, v in value.items() if k in names})
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build(args[0], v) for v in value)
        return tuple(build(a, v) for a, v in zip(args, value))
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


@dataclass(frozen=True)
class SampleArrays:
    """The arrays a conversion keeps of its samples, in the one .npz spelling that samples.npz (the
    cache's proof), the hand-over across a spawned child's exec and the cache's reader share:
    `input_<i>`, `reference_<i>`, `onnx_<i>`, `tf_<i>`, and each set's arrays under
    `<kind>_<set>_<part>_<i>` (kinds `verify`: inputs and PyTorch's outputs; `calibration`: inputs)."""

    inputs: tuple = ()     # the seeded sample inputs, PyTorch's layout
    reference: tuple = ()  # PyTorch's outputs on them
    onnx: tuple = ()       # onnxruntime's
    tf: tuple = ()         # the TF model's, in PyTorch's layout
    # ((inputs, reference), ...): what the files are verified on, when more than the seeded sample (the
    # calibration folder's held-out samples, or the seeded sample and further seeded inputs)
    verify_sets: tuple = ()
    calibration_sets: tuple = ()  # (inputs, ...): the int8 recipes' representative samples

    @property
    def sets(self) -> tuple:
        """What the TFLite files are verified on: the verification sets, else the seeded sample."""
        return self.verify_sets or ((self.inputs, self.reference),)

    def to_arrays(self) -> dict:
        arrays = {}
        for kind in ("input", "reference", "onnx", "tf"):
            arrays.update({f"{kind}_{i}": a for i, a in enumerate(getattr(self, _FIELD[kind]))})
        for s, (inputs, reference) in enumerate(self.verify_sets):
            arrays.update({f"verify_{s}_input_{i}": a for i, a in enumerate(inputs)})
            arrays.update({f"verify_{s}_reference_{i}": a for i, a in enumerate(reference)})
        for s, inputs in enumerate(self.calibration_sets):
            arrays.update({f"calibration_{s}_input_{i}": a for i, a in enumerate(inputs)})
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "SampleArrays":
        """From what to_arrays wrote (any mapping, an NpzFile too)."""
        names = set(arrays.keys())

        def group(prefix: str) -> tuple:
            n = 0
            while f"{prefix}{n}" in names:
                n += 1
            return tuple(arrays[f"{prefix}{i}"] for i in range(n))

        def count(kind: str) -> int:
            n = 0
            while f"{kind}_{n}_input_0" in names:
                n += 1
            return n

        return cls(**{_FIELD[kind]: group(f"{kind}_") for kind in ("input", "reference", "onnx", "tf")},
                   verify_sets=tuple((group(f"verify_{s}_input_"), group(f"verify_{s}_reference_"))
                                     for s in range(count("verify"))),
                   calibration_sets=tuple(group(f"calibration_{s}_input_") for s in range(count("calibration"))))

    def save(self, path: Path) -> None:
        import numpy as np

        np.savez(path, **self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> "SampleArrays":
        import numpy as np

        with np.load(path) as found:
            return cls.from_arrays({k: found[k] for k in found.files})


_FIELD = {"input": "inputs", "reference": "reference", "onnx": "onnx", "tf": "tf"}
