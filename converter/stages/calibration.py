"""Samples for the int8 recipes' calibration, and the ones held out to verify with (child side, numpy only).

A sidecar's `calibration = "folder"` names a folder of samples, one per file, sorted by name: an
`.npz` holds one array per input, keyed by the input's name; an `.npy` is the one input of a
single-input model. Each array must have its input's shape, a dtype that casts to the input's
within its kind (float64 -> float32, not float -> int), and finite values. The last fifth (at
least one) is held out: the recipes are verified on samples their calibration never saw. A bad
sample is a spec_error naming the file and the input.

Without a folder, calibration samples are generated from the input spec (its dtype and range, or
N(0, 1)), seeded, and every report says that random calibration does not represent real data.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..spec import InputSpec, SpecError

HOLD_OUT_SHARE = 0.2
MIN_SAMPLES = 2
SUFFIXES = (".npy", ".npz")
RANDOM_SEED_OFFSET = 1000  # the sample input uses the seed, the vacuous check seed + 1


def _sample(path: Path, inputs: tuple[InputSpec, ...]) -> list[np.ndarray]:
    names = [i.name for i in inputs]
    try:
        if path.suffix == ".npy":
            if len(inputs) != 1:
                raise SpecError(str(path), None, f"a .npy sample holds one array, and this model has {len(inputs)} "
                                f"inputs ({', '.join(names)}): give .npz files with one array per input name")
            arrays = {names[0]: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
    except SpecError:
        raise
    except Exception as exc:  # truncated, not numpy, pickled objects (refused: allow_pickle=False)
        raise SpecError(str(path), None, f"is not a readable sample ({type(exc).__name__}: {exc})") from None
    missing = [n for n in names if n not in arrays]
    unknown = sorted(set(arrays) - set(names))
    if missing or unknown:
        raise SpecError(str(path), None, f"holds {sorted(arrays)}, not the model's inputs {names}"
                        + (f" (missing: {', '.join(missing)})" if missing else "")
                        + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    out = []
    for spec in inputs:
        array = arrays[spec.name]
        where = f"input '{spec.name}'"
        if tuple(array.shape) != tuple(spec.shape):
            raise SpecError(str(path), None, f"{where}: shape {list(array.shape)} is not the input's {list(spec.shape)}")
        if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
            raise SpecError(str(path), None, f"{where}: dtype {array.dtype} does not cast to the input's {spec.dtype}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SpecError(str(path), None, f"{where}: holds NaN or infinite values")
        out.append(np.ascontiguousarray(array.astype(spec.dtype)))
    return out


def from_folder(folder: str, inputs: tuple[InputSpec, ...]) -> tuple[list, list, str]:
    """(calibration sets, held-out sets, what they are), each set one array per input."""
    path = Path(folder)
    try:
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
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
