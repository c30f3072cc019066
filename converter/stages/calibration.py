"""Samples for the int8 recipes' calibration, and the ones held out to verify with (child side, numpy only).

A sidecar's `calibration = "folder"` names a folder of samples, one per file, sorted by name: an
`.npz` holds one array per input, keyed by the input's name; an `.npy` is the one input of a
single-input model. Each array must have its input's shape, a dtype that casts to the input's
within its kind (float64 -> float32, not float -> int), and finite values. The last fifth (at
least one) is held out: the recipes are verified on samples their calibration never saw. A bad
sample is a spec_error naming the file and the input.

Without a folder, calibration samples are generated from the input spec (its dtype and range, or
N(0, 1)), seeded, and every report says that random calibration does not represent real data; the
files are then verified on `verify_samples` seeded inputs, none of them a calibration sample.
"""
from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from ..spec import InputSpec, SpecError

HOLD_OUT_SHARE = 0.2
MIN_SAMPLES = 2
SUFFIXES = (".npy", ".npz")
# the sample input uses the seed, the vacuous check seed + 1, random calibration samples the seeds from
# seed + RANDOM_SEED_OFFSET, the further verification inputs those from seed + VERIFY_SEED_OFFSET: the
# files are never verified on an input their calibration saw
RANDOM_SEED_OFFSET = 1000
VERIFY_SEED_OFFSET = 100_000


HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _array(fh, path: Path, spec: InputSpec) -> np.ndarray:
    """One array, its header (shape, dtype) checked against the input before a byte of its data is
    read: a header that declares 100 GB (a zip bomb, a link to a huge sparse file) is the sample's
    mistake, named, not the model's memory ceiling reached. No more than the input's bytes are read."""
    where = f"input '{spec.name}'"
    version = np.lib.format.read_magic(fh)
    if version not in HEADERS:
        raise ValueError(f"numpy format {version[0]}.{version[1]} (1.0 and 2.0 are read)")
    shape, fortran, dtype = HEADERS[version](fh)
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which load only by unpickling them")
    if tuple(shape) != tuple(spec.shape):
        raise SpecError(str(path), None, f"{where}: shape {list(shape)} is not the input's {list(spec.shape)}")
    if not np.can_cast(dtype, spec.dtype, casting="same_kind"):
        raise SpecError(str(path), None, f"{where}: dtype {dtype} does not cast to the input's {spec.dtype}")
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = fh.read(size)
    if len(data) != size:
        raise ValueError(f"it holds {len(data)} bytes of data where its header declares {size}")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _sample(path: Path, inputs: tuple[InputSpec, ...]) -> list[np.ndarray]:
    names = [i.name for i in inputs]
    try:
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise SpecError(str(path), None, f"a .npy sample holds one array, and this model has {len(inputs)} "
                                f"inputs ({', '.join(names)}): give .npz files with one array per input name")
            with open(path, "rb") as fh:
                arrays = {names[0]: _array(fh, path, inputs[0])}
        else:
            with zipfile.ZipFile(path) as archive:
                members = {n[:-len(".npy")] if n.endswith(".npy") else n: n for n in archive.namelist()}
                _same_names(path, names, members)
                arrays = {}
                for spec in inputs:
                    with archive.open(members[spec.name]) as fh:
                        arrays[spec.name] = _array(fh, path, spec)
    except SpecError:
        raise
    except Exception as exc:  # truncated, not numpy, pickled objects
        raise SpecError(str(path), None, f"is not a readable sample ({type(exc).__name__}: {exc})") from None
    out = []
    for spec in inputs:
        array = arrays[spec.name]
        where = f"input '{spec.name}'"
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SpecError(str(path), None, f"{where}: holds NaN or infinite values")
        out.append(np.ascontiguousarray(array.astype(spec.dtype)))
    return out


def _same_names(path: Path, names: list[str], found) -> None:
    missing = [n for n in names if n not in found]
    unknown = sorted(set(found) - set(names))
    if missing or unknown:
        raise SpecError(str(path), None, f"holds {sorted(found)}, not the model's inputs {names}"
                        + (f" (missing: {', '.join(missing)})" if missing else "")
                        + (f" (unknown: {', '.join(unknown)})" if unknown else ""))


def _regular(path: Path) -> Path:
    """A sample named like one is a file: a FIFO would block, a device never end; neither is dropped
    without a word (the user meant it as a sample)."""
    from .load import NOT_A_FILE

    try:
        kind = stat.S_IFMT(os.stat(path).st_mode)
    except OSError as exc:
        gone = "a link to a missing file" if os.path.islink(path) else f"unreadable ({exc.strerror or exc})"
        raise SpecError(str(path), None, f"is {gone}, not a sample") from None
    if kind != stat.S_IFREG:
        raise SpecError(str(path), None, f"is {NOT_A_FILE.get(kind, 'not a regular file')}, not a sample file")
    return path


def from_folder(folder: str, inputs: tuple[InputSpec, ...]) -> tuple[list, list, str]:
    """(calibration sets, held-out sets, what they are), each set one array per input."""
    path = Path(folder)
    try:
        files = [_regular(p) for p in sorted(path.iterdir()) if p.suffix in SUFFIXES]
    except OSError as exc:
        raise SpecError(folder, "calibration", f"cannot be read ({exc})") from None
    if len(files) < MIN_SAMPLES:
        raise SpecError(folder, "calibration", f"holds {len(files)} .npy / .npz sample(s); at least {MIN_SAMPLES} "
                        "are needed (some calibrate, at least one is held out to verify with)")
    sets = [_sample(p, inputs) for p in files]
    held = max(1, round(len(sets) * HOLD_OUT_SHARE))
    return sets[:-held], sets[-held:], (f"{len(sets) - held} samples from {folder} ({held} held out for "
                                        "verification)")


def generated(inputs: tuple[InputSpec, ...], seed: int, count: int) -> tuple[list, str]:
    from .load import make_inputs

    sets = [make_inputs(inputs, seed + RANDOM_SEED_OFFSET + k) for k in range(count)]
    return sets, (f"{count} random samples from the input spec (no calibration folder: random calibration does "
                  "not represent real data, so int8 figures show the conversion, not the accuracy on your data)")


def verification(inputs: tuple[InputSpec, ...], seed: int, count: int) -> list:
    """`count` seeded inputs to verify the TFLite files on beside the seeded sample, none of them a
    calibration sample (LIMITS bounds calibration samples below VERIFY_SEED_OFFSET - RANDOM_SEED_OFFSET)."""
    from .load import make_inputs

    return [make_inputs(inputs, seed + VERIFY_SEED_OFFSET + k) for k in range(count)]
