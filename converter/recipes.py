"""The TFLite deliverables a model can be built as, one row each (both sides; no heavy imports).

A recipe is data: its name (what sidecars, options, file names, JUnit properties and the
baseline call it), its title in reports, its default tolerance, what it needs (calibration
samples, integer inputs and outputs), what its quantization makes, its colour in the HTML
page and the device it is for. How the TFLite converter is set for it lives beside the converter
(`converter/stages/tflite.py`, one entry per name); everything else (verification, runtime
checks, reports, the gate, the cache) loops over this table.

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
    """One deliverable recipe. A new recipe is a row here, every field given but the two switches
    (no default a new row could forget), plus its converter settings in `stages/tflite.py`
    (CONVERTER_SETTINGS); tests/test_tables.py fails when either misses one."""

    name: str
    title: str            # "float32 TFLite output 'logits': ..." in messages
    tolerance: float      # default range-relative max error against PyTorch
    # what its quantization makes (deploy.py counts these tensors: none means nothing was
    # quantized, as under DRQ for weights of fewer than 1024 elements); None: it quantizes nothing
    quantized_dtype: str | None
    colour: str           # its dots and bars in summary.html
    device: str           # what it is for, in reports ("phone CPUs")
    # the share of an output's elements that may exceed the tolerance when the output declares no task
    # (at most 1 in OUTLIER_SHARE's inverse; none in a float32 file, which must be exact)
    outliers: float
    calibrated: bool = False   # needs a representative dataset (calibration samples)
    integer_io: bool = False   # its inputs and outputs are int8: quantized and dequantized around it

    @property
    def label(self) -> str:
        return f"{self.title} TFLite"


FP32 = "fp32"
# a quantized file's output that declares no task passes with at most this share of its elements beyond
# the tolerance (benchmarks/recipe_defaults.py; figures in the README)
OUTLIER_SHARE = 1e-4
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # no quantization: the conversion's own accuracy
    Recipe(FP32, "float32", 1e-4, None, "#4a90a4", "any CPU, GPU delegates", 0.0),
    # float16 weights, float32 computation on CPU; a GPU delegate computes in float16
    Recipe("fp16", "float16", 1e-2, "float16", "#38a169", "phones with a GPU delegate", OUTLIER_SHARE),
    # dynamic-range quantization (Optimize.DEFAULT): int8 weights, float activations
    Recipe("drq", "DRQ", 5e-2, "int8", "#2b6cb0", "phone CPUs", OUTLIER_SHARE),
    # full-integer quantization, calibrated, float inputs and outputs
    Recipe("int8", "int8", 1e-1, "int8", "#b7791f", "NPUs, DSPs, integer-only accelerators", OUTLIER_SHARE,
           calibrated=True),
    # full-integer quantization including int8 inputs and outputs
    Recipe("int8_io", "int8-IO", 1e-1, "int8", "#c05621", "microcontrollers (TensorFlow Lite Micro)", OUTLIER_SHARE,
           calibrated=True, integer_io=True),
)}
DEFAULT_DELIVERABLES = ("drq",)
# a quantized file repaired with layers in float32 counts only if it keeps this share of the weights the
# plain recipe quantizes (stages/repair.py; `repair_min_quantized` in a sidecar)
DEFAULT_REPAIR_MIN_QUANTIZED = 0.8


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
