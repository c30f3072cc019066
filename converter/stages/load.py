"""Stage 1: a model file -> an nn.Module (or ExportedProgram) and example inputs.

Formats: TorchScript archives, ExportedPrograms (.pt2), state_dicts (weights-only load
plus an architecture factory) and, only when the user opted in, full pickled modules.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import stat
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..failures import ConversionError, FailureKind, first_line, reraise_if_memory, stage_step
from ..spec import InputSpec, ModelSpec
from .model_outputs import OutputStructure, flatten
from .pickle_safety import inspect_pt2, is_legacy_torch_save, refusal_kind

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64,
                "int32": torch.int32, "bool": torch.bool}


@dataclass(frozen=True)
class LoadedModel:
    module: object  # torch.nn.Module, ScriptModule or torch.export.ExportedProgram
    format: str
    inputs: tuple[InputSpec, ...]
    sha256: str = ""  # of the bytes loaded


NOT_PYTORCH = "not a PyTorch file: neither a TorchScript / torch.export archive nor a torch.save file"


NOT_A_FILE = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
              stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def read_model_file(path: Path, max_bytes: float = 0) -> bytes:
    """The model's bytes, read once: what is hashed, inspected and loaded is the same, whatever
    happens to the file meanwhile. A FIFO or a device is never opened (it would block, or never
    end); a file larger than the memory ceiling is refused before it is read."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        gone = "a symbolic link to a missing file" if os.path.islink(path) else "missing"
        raise ConversionError(FailureKind.LOAD_ERROR, f"model file {path.name} is {gone}") from None
    kind = stat.S_IFMT(info.st_mode)
    if kind != stat.S_IFREG:
        raise ConversionError(FailureKind.LOAD_ERROR,
                              f"model file {path.name} is {NOT_A_FILE.get(kind, 'not a regular file')}, not a file")
    if max_bytes and info.st_size > max_bytes:
        raise ConversionError(FailureKind.OUT_OF_MEMORY,
                              f"model file is {info.st_size / 2**20:,.0f} MB, more than the "
                              f"{max_bytes / 2**20:,.0f} MB memory ceiling: loading it cannot fit")
    try:
        with open(path, "rb") as fh:
            # a regular file of 0 bytes may still hold some (/proc) or fail to read (EIO): read to know
            data = fh.read() if info.st_size else fh.read(1)
    except OSError as exc:  # a disk error, /proc/self/mem: the file's, in one line
        raise ConversionError(FailureKind.LOAD_ERROR, f"model file {path.name} cannot be read "
                                                      f"({exc.strerror or exc})") from None
    if not data:
        raise ConversionError(FailureKind.LOAD_ERROR, "model file is empty (0 bytes)")
    if not info.st_size:
        raise ConversionError(FailureKind.LOAD_ERROR, f"model file {path.name} says it holds 0 bytes but does not "
                                                      "(a /proc or device file, not a model)")
    return data


def sniff_format(data: bytes) -> str:
    """Tell TorchScript, ExportedProgram and torch.save files apart without unpickling."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        if is_legacy_torch_save(data):
            return "pickle_archive"
        raise ConversionError(FailureKind.LOAD_ERROR, NOT_PYTORCH)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ConversionError(FailureKind.LOAD_ERROR, f"corrupt archive ({exc})") from exc
    if any(n.endswith("models/model.json") or n.rsplit("/", 1)[-1].startswith("serialized_exported_program")
           for n in names):
        return "exported_program"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle_archive"  # torch.save: a state_dict or a full module, decided on load
    raise ConversionError(FailureKind.LOAD_ERROR, f"{NOT_PYTORCH} (a zip archive without data.pkl)")


@contextlib.contextmanager
def _folder_importable(folder: Path):
    """The model's folder on sys.path only while its factory or pickled classes are imported:
    afterwards nothing in it (a stray tensorflow.py) can shadow an installed package."""
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _import_factory(ref: str, folder: Path):
    module_name, func_name = ref.split(":")
    with _folder_importable(folder):
        try:
            return getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise ConversionError(FailureKind.SPEC_ERROR,
                                  f"factory '{ref}' cannot be imported: {exc}") from exc


def _from_state_dict(state, spec: ModelSpec):
    if not spec.factory:
        raise ConversionError(FailureKind.SPEC_ERROR,
                              "file holds a state_dict: name its architecture with "
                              "factory = 'package.module:function' in the model's .toml")
    try:
        module = _import_factory(spec.factory, Path(spec.path).parent)(**spec.factory_kwargs)
    except KeyboardInterrupt as exc:  # raised by the factory's code (the child has no terminal to send it)
        raise ConversionError(FailureKind.LOAD_ERROR, f"factory '{spec.factory}' raised KeyboardInterrupt"
                              f"{f' ({str(exc).splitlines()[0]})' if str(exc) else ''}: it must return a module") from exc
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(FailureKind.SPEC_ERROR,
                              f"factory '{spec.factory}' returned a {type(module).__name__}, not a "
                              "torch.nn.Module")
    with stage_step(FailureKind.LOAD_ERROR, f"state_dict does not fit factory '{spec.factory}'"):
        module.load_state_dict(state)
    return module


def _load_pickle_archive(path: Path, data: bytes, spec: ModelSpec):
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything beyond tensors and plain containers
        reraise_if_memory(exc)
        if refusal_kind(exc) is FailureKind.LOAD_ERROR:
            raise ConversionError(FailureKind.LOAD_ERROR,
                                  f"{NOT_PYTORCH}, or it is corrupt or truncated ({first_line(exc)})") from exc
        if not spec.trust_pickle:
            raise ConversionError(
                FailureKind.UNTRUSTED_PICKLE,
                "file is a pickled Python object, and unpickling runs arbitrary code; if you "
                "trust its source, set trust_pickle = true in its .toml (CLI: --trust-pickle), "
                "or better re-save it as TorchScript, torch.export (.pt2) or a state_dict") from exc
        with stage_step(FailureKind.LOAD_ERROR, "trusted pickle failed to load"), \
                _folder_importable(path.parent):  # pickled classes are imported while unpickling
            obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, torch.nn.Module):
            raise ConversionError(FailureKind.LOAD_ERROR,
                                  f"pickle holds a {type(obj).__name__}, not an nn.Module")
        return obj, "pickle"
    for key in ("state_dict", "model_state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_state_dict(obj, spec), "state_dict"
    raise ConversionError(FailureKind.LOAD_ERROR,
                          f"file holds a {type(obj).__name__} that is neither a state_dict nor a module")


def _load_exported_program(data: bytes, spec: ModelSpec):
    if not spec.trust_pickle:
        inspect_pt2(data)
    return torch.export.load(io.BytesIO(data))


def exported_shapes(program) -> list[tuple]:
    """The shape each user input of an ExportedProgram was exported with (None for a dimension
    exported dynamic)."""
    user = set(program.graph_signature.user_inputs)
    shapes = []
    for node in program.graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" and node.name in user else None
        if isinstance(val, torch.Tensor):
            shapes.append(tuple(d if isinstance(d, int) else None for d in val.shape))
    return shapes


def _check_exported_shapes(program, inputs: tuple[InputSpec, ...]) -> None:
    """An ExportedProgram is specialised to the shapes it was exported with: a sidecar shape that
    differs fails in PyTorch's own guard ('Guard failed: x.size()[1] == 16'); say it in its words."""
    for spec, exported in zip(inputs, exported_shapes(program)):
        fits = len(spec.shape) == len(exported) and all(e is None or e == d for d, e in zip(spec.shape, exported))
        if not fits:
            shown = [e if e is not None else "dynamic" for e in exported]
            raise ConversionError(FailureKind.SPEC_ERROR,
                                  f"input '{spec.name}': the .toml's shape {list(spec.shape)} is not the shape the .pt2 "
                                  f"was exported with {shown} (an ExportedProgram keeps its exported shapes unless a "
                                  "dimension was exported dynamic): fix [[inputs]] shape, or export the model again")


def _example_inputs_of(program) -> tuple[InputSpec, ...]:
    args = getattr(program, "example_inputs", None)
    if not args or not args[0]:
        return ()
    tensors = [a for a in args[0] if isinstance(a, torch.Tensor)]
    inv = {v: k for k, v in TORCH_DTYPES.items()}
    return tuple(InputSpec("input" if len(tensors) == 1 else f"input_{i}", tuple(t.shape),
                           inv.get(t.dtype, "float32")) for i, t in enumerate(tensors))


def load_model(spec: ModelSpec, max_bytes: float = 0, *, data: bytes | None = None, digest: str = "") -> LoadedModel:
    """The model from `data` (its bytes, read by the caller with read_model_file, hashed as `digest`),
    or read here."""
    path = Path(spec.path)
    if not spec.trust_pickle:
        # a second wall behind inspect_pt2: torch itself then refuses every weights_only=False load
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    if data is None:
        data = read_model_file(path, max_bytes)
        digest = hashlib.sha256(data).hexdigest()
    sniffed = sniff_format(data)
    fmt = spec.format if spec.format != "auto" else sniffed
    with stage_step(FailureKind.LOAD_ERROR, f"cannot load as {fmt}"):
        if fmt == "torchscript":
            module, fmt = torch.jit.load(io.BytesIO(data), map_location="cpu"), "torchscript"
        elif fmt == "exported_program":
            module = _load_exported_program(data, spec)
        else:
            module, fmt = _load_pickle_archive(path, data, spec)
    del data
    inputs = spec.inputs or (_example_inputs_of(module) if fmt == "exported_program" else ())
    if fmt == "exported_program" and spec.inputs:
        _check_exported_shapes(module, spec.inputs)
    if not inputs:
        raise ConversionError(FailureKind.SPEC_ERROR, "no input shape: add [[inputs]] to the model's .toml")
    if hasattr(module, "eval"):
        module.eval()
    return LoadedModel(module, fmt, tuple(inputs), digest)


def make_inputs(inputs: tuple[InputSpec, ...], seed: int) -> list[np.ndarray]:
    """Seeded sample inputs that respect each input's dtype and range."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        if spec.dtype == "bool":
            arrays.append(rng.random(spec.shape) < 0.5)
        elif spec.dtype in ("int64", "int32"):
            low, high = spec.range or (0, 10)
            arrays.append(rng.integers(int(low), int(high), size=spec.shape).astype(spec.dtype))
        else:
            a = (rng.uniform(*spec.range, size=spec.shape) if spec.range
                 else rng.standard_normal(spec.shape))
            arrays.append(a.astype(spec.dtype))
    return arrays


def run_torch(loaded: LoadedModel, arrays: list[np.ndarray],
              dtype=torch.float32) -> tuple[list[np.ndarray], OutputStructure]:
    """PyTorch's outputs on the sample inputs (the reference), flat, with their structure."""
    with torch.no_grad():
        out = torch_callable(loaded)(*[torch.from_numpy(a) for a in arrays])
    tensors, structure = flatten(out)
    return [t.detach().to(dtype).numpy() for t in tensors], structure


# a second sample input must move an output by more than this share of its range, or comparing it
# proves nothing (torchvision's ShuffleNetV2 with weights=None moves by 0.01 %)
VACUOUS_MOVE = 1e-3
NOISE_RANGE = 1e-6  # a range this small against the output's magnitude is float32 noise (EfficientNet: 1e-13)


def caveats(loaded: LoadedModel, reference: list[np.ndarray], names: list[str], seed: int) -> tuple:
    """Outputs that barely depend on the input: PyTorch run again on inputs of another seed."""
    from ..results import Caveat

    other, _ = run_torch(loaded, make_inputs(loaded.inputs, seed + 1))
    found = []
    for name, a, b in zip(names, reference, other):
        a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        if not a.size:
            continue
        # NaN and infinity are values too (log of a negative): where they fall moving with the input
        # is a dependence; otherwise only the finite elements are measured (NaN arithmetic says 0 %)
        finite = np.isfinite(a)
        if (finite != np.isfinite(b)).any() or (~finite & (a != b) & ~(np.isnan(a) & np.isnan(b))).any():
            continue
        if not finite.any():
            found.append(Caveat(name, 0.0, 0.0, "it is NaN or infinite everywhere, on two different sample inputs"))
            continue
        a, b = a[finite], b[finite]
        magnitude = float(np.abs(a).max())
        spread = float(np.ptp(a))
        if spread <= NOISE_RANGE * max(magnitude, 1.0):  # one element, or a constant map: its spread over both samples
            spread = float(np.ptp(np.concatenate([a.ravel(), b.ravel()])))
        moved = float(np.abs(a - b).max()) / spread if spread > 0 else 0.0
        if spread <= NOISE_RANGE * max(magnitude, 1.0):
            found.append(Caveat(name, moved, spread, f"it spans {spread:.3g} over two different sample inputs: float32 "
                                "noise, whatever the input"))
        elif moved < VACUOUS_MOVE:
            found.append(Caveat(name, moved, spread, f"a different sample input moves it by {moved:.2%} of its range; "
                                "an untrained model with default BatchNorm statistics, or inputs far from its data "
                                "(recalibrate BatchNorm on sample inputs before saving; give real ranges)"))
    return tuple(found)


def torch_callable(loaded: LoadedModel):
    return loaded.module.module() if loaded.format == "exported_program" else loaded.module
