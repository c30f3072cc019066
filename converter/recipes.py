"""The TFLite deliverables a model can be built as, one row each (both sides; no heavy imports).

A recipe is data: its name (what sidecars, options, file names, JUnit properties and the
baseline call it), its title in reports, its default tolerance, what it needs (calibration
samples, integer inputs and outputs) and the device it is for. How the TFLite converter is set
for it lives beside the converter (`converter/stages/tflite.py`, one entry per name); everything
else (verification, runtime checks, reports, the gate, the cache) loops over this table.

Only the requested recipes are built. What tells a conversion error from a quantization error
is onnx2tf's TF model, checked in float32 against PyTorch before any TFLite conversion, and,
for a recipe that misses its tolerance, a float32 TFLite file built then to explain it.

The default tolerances are range-relative maximum errors against PyTorch, set from measurements
on small models trained in code (`benchmarks/recipe_defaults.py`, figures in the README): a
default changes only with the measurements that justify it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str            # "float32 TFLite output 'logits': ..." in messages
    tolerance: float      # default range-relative max error against PyTorch
    description: str
    calibrated: bool = False   # needs a representative dataset (calibration samples)
    integer_io: bool = False   # its inputs and outputs are int8: quantized and dequantized around it
    device: str = ""           # where it goes, for the docs and the CLI's help

    @property
    def label(self) -> str:
        return f"{self.title} TFLite"


FP32 = "fp32"
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(FP32, "float32", 1e-4, "no quantization: the conversion's own accuracy", device="any CPU or GPU delegate"),
    Recipe("fp16", "float16", 1e-2, "float16 weights, float32 computation on CPU (a GPU delegate computes in "
           "float16)", device="phones with a GPU delegate"),
    Recipe("drq", "DRQ", 5e-2, "dynamic-range quantization (Optimize.DEFAULT): int8 weights, float activations",
           device="phone CPUs"),
    Recipe("int8", "int8", 1e-1, "full-integer quantization (int8 weights and activations, calibrated), float "
           "inputs and outputs", calibrated=True, device="NPUs, DSPs, integer-only accelerators"),
    Recipe("int8_io", "int8-IO", 1e-1, "full-integer quantization including int8 inputs and outputs",
           calibrated=True, integer_io=True, device="microcontrollers (TensorFlow Lite Micro)"),
)}
DEFAULT_DELIVERABLES = ("drq",)


def check_deliverables(value) -> tuple[str, ...]:
    """A sidecar's or an option's list of recipes, in order of preference (ValueError otherwise)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a non-empty list of recipes ({', '.join(RECIPES)}), not {value!r}")
    unknown = [v for v in value if v not in RECIPES]
    if unknown:
        raise ValueError(f"names unknown recipe(s) {', '.join(map(repr, unknown))} (known: {', '.join(RECIPES)})")
    if len(set(value)) != len(value):
        raise ValueError(f"names a recipe twice: {list(value)}")
    return tuple(value)


def calibrated(recipes) -> bool:
    return any(RECIPES[r].calibrated for r in recipes if r in RECIPES)
