"""The model spec: what a model needs to be converted, from its TOML sidecar.

Layers, lowest priority first: harness defaults (ini / CLI / environment), every
folder-level `models.toml` from the models root down to the model's folder, and the
model's own `<stem>.toml`. Unknown keys and bad values are errors naming file and key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .failures import FailureKind
from .pickle_sniff import looks_like_state_dict
from .protocol import build, plain
from .recipes import DEFAULT_DELIVERABLES, DEFAULT_REPAIR_MIN_QUANTIZED, RECIPES, check_deliverables
from .task_spec import OPTIONS, TASKS, check_task

DEFAULTS_FILE = "models.toml"
OPSET = 17  # the ONNX opset of the original workflow
FORMATS = ("auto", "torchscript", "exported_program", "state_dict", "pickle")
EXPORTERS = ("auto", "legacy", "dynamo")
LAYOUTS = ("nhwc", "nchw")
# the conversion routes (the step table's engine column, stages/pipeline.py); the first is the default's first
ENGINES = ("onnx2tf", "litert")
ENGINE_CHOICES = ("auto",) + ENGINES  # auto: onnx2tf, and litert where onnx2tf fails or gets float32 wrong
DTYPES = ("float32", "float16", "int64", "int32", "bool")
DEFAULT_TOLERANCE = {"onnx": 1e-4, **{name: r.tolerance for name, r in RECIPES.items()}}
DEFAULT_TIMEOUT = 600.0
# One set of bounds for a number wherever it is set (sidecar, models.toml, pytest option,
# environment, ini, CLI): a value outside them is an error naming its source, never a crash
# later (pytest-timeout overflows on 1e308, numpy refuses a negative seed).
LIMITS = {
    "timeout": (1, 7 * 24 * 3600, float),          # seconds: a week
    "memory_limit_mb": (64, 16 * 2**20, float),    # 64 MB .. 16 TB
    "seed": (0, 2**32 - 1, int),
    "threads": (1, 1024, int),
    "fraction": (0.05, 1.0, float),
    "interval": (0.5, 3600, float),
    "samples": (1, 10000, int),                    # random calibration samples
    "verify_samples": (1, 1000, int),              # seeded inputs every TFLite file is verified on
    "share": (0.0, 1.0, float),
}
DEFAULT_CALIBRATION_SAMPLES = 32
# without a calibration folder, every file is verified on this many seeded inputs (the first is the
# sample the ONNX file and the TF model are checked on); benchmarks/verify_inputs.py measured the cost
DEFAULT_VERIFY_SAMPLES = 8
MAX_ELEMENTS = 2**31 - 1  # of one input: beyond this no phone model exists and numpy may not allocate
DTYPE_BOUNDS = {"float32": 3.4028234e38, "float16": 65504.0, "int64": 2**63 - 1, "int32": 2**31 - 1}


class SpecError(Exception):
    kind = FailureKind.SPEC_ERROR

    def __init__(self, where: str, key: str | None, problem: str):
        self.where, self.key, self.problem = where, key, problem
        at = f" key '{key}'" if key else ""
        super().__init__(f"{where}{at}: {problem}")

    @classmethod
    def of_file(cls, where: str, problems: list[tuple[str, str]], note: str = "") -> "SpecError":
        """Every mistake of one file in one line, so that it is fixed in one round, not one per run;
        `note` closes the line (the known keys, once, however many keys were unknown)."""
        if len(problems) == 1:
            return cls(where, problems[0][0], problems[0][1] + note)
        return cls(where, None, f"{len(problems)} errors: " + "; ".join(f"key '{k}': {p}" for k, p in problems) + note)


def close_key(key: str, known) -> str | None:
    """The known key a misspelt one most likely meant (difflib's closest above its 0.6 cut-off)."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return close[0] if close else None


def unknown_keys(found, known) -> str:
    """`unknown key 'shap': did you mean 'shape'?`, one clause per unknown key of a table (whose few keys
    are listed where none is close)."""
    clauses = []
    for key in (k for k in found if k not in known):
        close = close_key(key, known)
        clauses.append(f"unknown key '{key}': " + (f"did you mean '{close}'?" if close else f"known keys: {', '.join(known)}"))
    return "; ".join(clauses)


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Expectation:
    kind: str
    reason: str


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    path: str
    inputs: tuple[InputSpec, ...] = ()
    output_names: tuple[str, ...] = ()
    format: str = "auto"
    factory: str | None = None
    factory_kwargs: dict = field(default_factory=dict)
    trust_pickle: bool = False
    exporter: str = "auto"
    layout: str = "nhwc"
    engine: str = "auto"  # ENGINE_CHOICES
    pseudo_ops: tuple[str, ...] = ()
    allow_flex: bool = False
    auto_fixes: bool = True
    deliverables: tuple[str, ...] = DEFAULT_DELIVERABLES  # recipes, in order of preference
    calibration: str | None = None  # folder of .npy / .npz samples (absolute); None: random samples
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES  # how many random ones
    verify_samples: int = DEFAULT_VERIFY_SAMPLES  # seeded inputs to verify on, without a calibration folder
    repair: bool = True  # a quantized file that misses is rebuilt with its worst layers in float32 first
    repair_min_quantized: float = DEFAULT_REPAIR_MIN_QUANTIZED
    channel_axis: dict = field(default_factory=dict)  # output name -> axis judged per channel
    task: dict | None = None  # what every output means (tasks.check_task): the quantized files' verdict
    outputs: dict = field(default_factory=dict)  # output name -> {"task": ..., options}: one output's task
    tolerance: dict = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    output_tolerance: dict = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    memory_limit_mb: float | None = None
    seed: int = 0
    expect: Expectation | None = None
    sources: tuple[str, ...] = ()

    def tolerance_for(self, stage: str, output: str) -> float:
        return float(self.output_tolerance.get(output, {}).get(stage, self.tolerance[stage]))

    def task_for(self, output: str) -> dict | None:
        """The output's declared task (its own, else the model's), None when it declares none."""
        return self.outputs.get(output, self.task)

    def to_dict(self) -> dict:  # into job.json, the same way results cross back
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return build(cls, data)


# key -> (checker, description); checkers return the normalised value or raise ValueError
def str_choice(choices):
    def check(v):
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {v!r}")
        return v
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {v!r}")
    return v


def _positive_number(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not v > 0:
        raise ValueError(f"must be a positive finite number, not {v!r}")
    return float(v)


def bounded(name: str, v):
    """A number checked against LIMITS[name]; strings (options, environment) are parsed first."""
    low, high, cast = LIMITS[name]
    if isinstance(v, str):
        try:
            v = float(v.strip()) if cast is float else int(v.strip())
        except ValueError:
            raise ValueError(f"must be {'a number' if cast is float else 'an integer'}, not {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (cast is int and not isinstance(v, int)):
        raise ValueError(f"must be {'a number' if cast is float else 'an integer'}, not {v!r}")
    if not math.isfinite(v) or not low <= v <= high:
        def plain(x):  # 16777216, not 1.67772e+07
            return int(x) if float(x).is_integer() else x
        raise ValueError(f"must be between {plain(low)} and {plain(high)}, not {v!r}")
    return cast(v)


def _str_list(v):
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise ValueError(f"must be a list of names, not {v!r}")
    return tuple(v)


# TensorFlow names a SavedModel's output scopes after the outputs, and refuses other characters
# (late, as a savedmodel_error); its signatures refuse input names beyond ASCII
TF_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_.\\/>-]+")


def _output_names(v):
    names = _str_list(v)
    bad = [n for n in names if not TF_OUTPUT_NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a name TensorFlow accepts for an output (letters, digits and _ . - / > "
                         "only)")
    return names


def _factory(v):
    if not isinstance(v, str) or v.count(":") != 1 or not all(v.split(":")):
        raise ValueError(f"must look like 'package.module:function', not {v!r}")
    return v


def _table(v):
    if not isinstance(v, dict):
        raise ValueError(f"must be a table, not {v!r}")
    return dict(v)


def parse_shape(v) -> tuple[int, ...]:
    if isinstance(v, str):
        try:
            v = [int(p) for p in v.strip().replace("x", ",").split(",")]
        except ValueError:
            raise ValueError(f"must be a list of positive integers like 1,3,224,224, not {v!r}") from None
    if (not isinstance(v, (list, tuple)) or not v
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)):
        raise ValueError(f"must be a list of positive integers (static shape), not {v!r}")
    if math.prod(v) > MAX_ELEMENTS:
        raise ValueError(f"has {math.prod(v):,} elements, more than the {MAX_ELEMENTS:,} one input may have")
    return tuple(v)


def _range(v, dtype: str):
    if dtype == "bool":
        raise ValueError("range has no meaning for a bool input")
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise ValueError(f"range must be [low, high], not {v!r}")
    limit = DTYPE_BOUNDS[dtype]
    if not all(math.isfinite(x) and abs(x) <= limit for x in v):
        raise ValueError(f"range {v!r} must be finite and within +-{limit:g} for {dtype}")
    if dtype.startswith("int"):
        if not all(float(x).is_integer() for x in v):
            raise ValueError(f"range {v!r} of an {dtype} input must hold whole numbers")
        if not v[0] < v[1]:
            raise ValueError(f"range {v!r} must be [low, high] with low < high (high is excluded)")
        return (int(v[0]), int(v[1]))
    if not v[0] < v[1]:
        raise ValueError(f"range {v!r} must be [low, high] with low < high")
    return (float(v[0]), float(v[1]))


INPUT_KEYS = ("name", "shape", "dtype", "range")


def _inputs(v):
    if not isinstance(v, list) or not v:
        raise ValueError("must be a non-empty array of tables ([[inputs]])")
    out = []
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise ValueError(f"entry {i} must be a table")
        if set(item) - set(INPUT_KEYS):
            raise ValueError(f"entry {i}: {unknown_keys(item, INPUT_KEYS)}")
        name = item.get("name", f"input_{i}" if len(v) > 1 else "input")
        if not isinstance(name, str) or not name:
            raise ValueError(f"entry {i}: name must be a non-empty string")
        if not name.isascii() or not name.isprintable():
            raise ValueError(f"entry {i}: name {name!r} is not one TensorFlow accepts for an input (ASCII only)")
        if "shape" not in item:
            raise ValueError(f"entry {i} ({name}) needs a shape")
        try:
            shape = parse_shape(item["shape"])
        except ValueError as exc:
            raise ValueError(f"entry {i} ({name}) shape {exc}") from None
        dtype = item.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ValueError(f"entry {i} ({name}) dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        rng = item.get("range")
        if rng is not None:
            try:
                rng = _range(rng, dtype)
            except ValueError as exc:
                raise ValueError(f"entry {i} ({name}) {exc}") from None
        out.append(InputSpec(name, shape, dtype, rng))
    names = [i.name for i in out]
    if len(set(names)) != len(names):
        raise ValueError(f"input names must be unique, got {names}")
    return tuple(out)


def _tolerance(v):
    v = _table(v)
    plain, per_output = {}, {}
    for key, value in v.items():
        if key == "outputs":
            for out_name, table in _table(value).items():
                table = _table(table)
                if set(table) - set(DEFAULT_TOLERANCE):
                    raise ValueError(f"outputs.{out_name}: {unknown_keys(table, DEFAULT_TOLERANCE)}")
                per_output[out_name] = {k: _positive_number(x) for k, x in table.items()}
        elif key in DEFAULT_TOLERANCE:
            plain[key] = _positive_number(value)
        else:
            raise ValueError(unknown_keys([key], [*DEFAULT_TOLERANCE, "outputs"]))
    return plain, per_output


def _channel_axis(v):
    out = {}
    for name, axis in _table(v).items():
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0 or not -8 <= axis <= 8:
            raise ValueError(f"{name}: must be an axis of the output other than its batch axis 0 (e.g. 1, or -1 "
                             f"for the last), not {axis!r}")
        out[name] = axis
    return out


def _no_table(v):
    raise ValueError(f"must name a task ({', '.join(TASKS)}), not {v!r}; a task with options goes in "
                     "[outputs.<name>]")


def _outputs(v):
    """`[outputs.<name>]` tables: what each named output means (its task and the task's options)."""
    out = {}
    for name, table in _table(v).items():
        table = _table(table)
        unknown = sorted(set(table) - {"task"} - {k for options in OPTIONS.values() for k in options})
        if "task" not in table or unknown:
            raise ValueError(f"{name}: " + (f"unknown key(s) {', '.join(unknown)}" if unknown else
                                            f"needs a task ({', '.join(TASKS)})"))
        try:
            out[name] = check_task(table)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def _calibration(v, where: str):
    """A folder of samples, relative to the file that names it (or to where the command runs)."""
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must name a folder of .npy / .npz samples, not {v!r}")
    base = Path(where).parent if where.endswith(".toml") else Path.cwd()
    folder = Path(os.path.abspath(base / v))
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder (of .npy / .npz samples, matched to the inputs by name)")
    return str(folder)


def _expect(v):
    v = _table(v)
    if set(v) - {"kind", "reason"}:
        raise ValueError(unknown_keys(v, ("kind", "reason")))
    kinds = [k.value for k in FailureKind]
    if v.get("kind") not in kinds:
        raise ValueError(f"kind must be one of {', '.join(kinds)}")
    if not isinstance(v.get("reason"), str) or not v["reason"].strip():
        raise ValueError("needs a non-empty reason")
    return Expectation(v["kind"], v["reason"].strip())


KEYS = {
    "inputs": _inputs,
    "output_names": _output_names,
    "format": str_choice(FORMATS),
    "factory": _factory,
    "factory_kwargs": _table,
    "trust_pickle": _bool,
    "exporter": str_choice(EXPORTERS),
    "layout": str_choice(LAYOUTS),
    "engine": str_choice(ENGINE_CHOICES),
    "pseudo_ops": lambda v: tuple(s.lower() for s in _str_list(v)),
    "allow_flex": _bool,
    "auto_fixes": _bool,
    "deliverables": check_deliverables,
    "calibration": _calibration,
    "calibration_samples": lambda v: bounded("samples", v),
    "verify_samples": lambda v: bounded("verify_samples", v),
    "repair": _bool,
    "repair_min_quantized": lambda v: bounded("share", v),
    "channel_axis": _channel_axis,
    "task": lambda v: check_task(v) if isinstance(v, str) else _no_table(v),
    "outputs": _outputs,
    "tolerance": _tolerance,
    "timeout": lambda v: bounded("timeout", v),
    "memory_limit_mb": lambda v: bounded("memory_limit_mb", v),
    "seed": lambda v: bounded("seed", v),
    "expect": _expect,
}


def read_layer(path: Path) -> dict:
    """Parse and validate one TOML file into spec field values."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), None, f"cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), None, f"is not valid TOML ({exc})") from None
    return validate_layer(raw, str(path))


def validate_layer(raw: dict, where: str) -> dict:
    """A file's values, checked; every key that is wrong is named, in the file's order, in one SpecError."""
    layer, problems, unmatched = {}, [], False
    for key, value in raw.items():
        check = KEYS.get(key)
        if check is None:
            close = close_key(key, KEYS)
            problems.append((key, f"unknown key: did you mean '{close}'?" if close else "unknown key"))
            unmatched |= close is None
            continue
        try:
            layer[key] = check(value, where) if check is _calibration else check(value)
        except ValueError as exc:
            problems.append((key, str(exc)))
    if problems:  # the known keys once, at the end: a long line is cut there, not in a later error
        raise SpecError.of_file(where, problems, f" (known keys: {', '.join(sorted(KEYS))})" if unmatched else "")
    return layer


def defaults_layer(input_shapes=(), timeout=None, memory_limit_mb=None, deliverables=None, engine=None,
                   verify_samples=None) -> dict:
    """Harness-wide defaults (ini / CLI / env) as a layer below every file."""
    layer = {}
    if engine:
        layer["engine"] = str_choice(ENGINE_CHOICES)(engine)
    if verify_samples is not None:
        layer["verify_samples"] = bounded("verify_samples", verify_samples)
    if deliverables:
        layer["deliverables"] = check_deliverables(deliverables)
    if input_shapes:
        shapes = [parse_shape(s) for s in input_shapes]
        layer["inputs"] = tuple(
            InputSpec("input" if len(shapes) == 1 else f"input_{i}", s) for i, s in enumerate(shapes))
    if timeout is not None:
        layer["timeout"] = float(timeout)
    if memory_limit_mb is not None:
        layer["memory_limit_mb"] = float(memory_limit_mb)
    return layer


def folder_layers(model_path: Path, root: Path | None) -> list[tuple[Path, dict]]:
    """`models.toml` files from root down to the model's folder (nearest last)."""
    # where the model is listed, not where a symbolic link leads (a blob store outside the folder)
    model_dir = Path(os.path.abspath(model_path)).parent
    root = Path(os.path.abspath(root)) if root is not None else model_dir
    dirs = [model_dir]
    if model_dir != root and root in model_dir.parents:
        dirs = [root] + [p for p in reversed(model_dir.parents) if root in p.parents] + [model_dir]
    return [(d / DEFAULTS_FILE, read_layer(d / DEFAULTS_FILE)) for d in dirs if (d / DEFAULTS_FILE).is_file()]


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".toml")


def load_spec(model_path: Path, model_id: str, *, root: Path | None = None,
              defaults: dict | None = None, overrides: dict | None = None) -> ModelSpec:
    """Resolve the spec of one model from all its layers. Raises SpecError."""
    model_path = Path(model_path)
    layers = [("defaults", defaults or {})] + [(str(p), layer) for p, layer in folder_layers(model_path, root)]
    side = sidecar_path(model_path)
    if side.is_file():
        layers.append((str(side), read_layer(side)))
    if overrides:
        layers.append(("command line", overrides))

    merged: dict = {}
    tolerance = dict(DEFAULT_TOLERANCE)
    per_output: dict = {}
    for _, layer in layers:
        for key, value in layer.items():
            if key == "tolerance":
                tolerance.update(value[0])
                for name, table in value[1].items():
                    per_output.setdefault(name, {}).update(table)
            else:
                merged[key] = value
    where = str(side) if side.is_file() else str(model_path)

    # a state_dict is told at once, with the missing shape if it is missing too: not one after the other
    needs_factory = not merged.get("factory") and (
        merged.get("format") == "state_dict"
        or (merged.get("format", "auto") == "auto" and model_path.suffix != ".pt2" and looks_like_state_dict(model_path)))
    factory = ("the file holds a state_dict (weights without their architecture): name the code that builds the "
               "module with factory = 'module:function' (a .py file beside it)")
    if "inputs" not in merged and model_path.suffix != ".pt2":
        raise SpecError(where, "inputs", "no input shape from any source: add [[inputs]] with a shape to "
                        f"{side.name} (or to a {DEFAULTS_FILE} in the folder, for all its models), or set "
                        f"--tflite-input-shape / the ini key tflite_input_shape{'; and ' + factory if needs_factory else ''}")
    if needs_factory:
        raise SpecError(where, "factory", factory)
    return ModelSpec(model_id=model_id, path=str(model_path), tolerance=tolerance,
                     output_tolerance=per_output, sources=tuple(w for w, layer in layers[1:] if layer), **merged)
