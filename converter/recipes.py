"""The TFLite deliverables a model can be built as, one row each (both sides; no heavy imports).

A recipe is data: its name (what sidecars, options, file names, JUnit properties and the
baseline call it), its title in reports, its default tolerance and what it needs. How the TFLite
converter is set for it lives beside the converter (`converter/stages/tflite.py`, one entry per
name); everything else (verification, reports, the gate, the cache) loops over this table.

Only the requested recipes are built. What tells a conversion error from a quantization error
is onnx2tf's TF model, checked in float32 against PyTorch before any TFLite conversion, and,
for a recipe that misses its tolerance, a float32 TFLite file built then to explain it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str            # "float32 TFLite output 'logits': ..." in messages
    tolerance: float      # default range-relative max error against PyTorch
    description: str

    @property
    def label(self) -> str:
        return f"{self.title} TFLite"


FP32 = "fp32"
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(FP32, "float32", 1e-4, "no quantization: the conversion's own accuracy"),
    Recipe("drq", "DRQ", 5e-2, "dynamic-range quantization (Optimize.DEFAULT): int8 weights, float activations"),
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
