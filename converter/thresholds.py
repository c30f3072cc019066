"""What counts as a regression against the baseline: `err:x2,err_floor:1e-5,size:+10%`, per recipe
where wanted (`drq_err:x3`, `int8_size:+5%`).

A setting (parsed where it is given) that the gate reads; neither imports the other.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .recipes import RECIPES

DEFAULT_ERR_FACTOR = 2.0
DEFAULT_SIZE = 0.10


@dataclass(frozen=True)
class Thresholds:
    err: float = DEFAULT_ERR_FACTOR   # a recipe's error is gated when it grows by this factor ...
    err_floor: float = 1e-5           # ... and ends above this floor (noise at 1e-7 is no regression)
    size: float = DEFAULT_SIZE        # a TFLite file's growth beyond +10 %
    per_recipe: dict = field(default_factory=dict)  # "drq_err" -> 3.0, "int8_size" -> 0.05

    def err_factor(self, recipe: str) -> float:
        return self.per_recipe.get(f"{recipe}_err", self.err)

    def size_growth(self, recipe: str) -> float:
        return self.per_recipe.get(f"{recipe}_size", self.size)

    def describe(self) -> str:
        parts = [f"err:x{self.err:g}", f"err_floor:{self.err_floor:g}", f"size:+{self.size * 100:g}%"]
        for key, value in sorted(self.per_recipe.items()):
            parts.append(f"{key}:x{value:g}" if key.endswith("_err") else f"{key}:+{value * 100:g}%")
        return ",".join(parts)


_RECIPE = "|".join(("tf", *RECIPES))  # tf: onnx2tf's TF model, checked in float32
_TERM = re.compile(rf"^((?:(?:{_RECIPE})_)?err):x(\d+(?:\.\d*)?)$|^(err_floor):(\d+(?:\.\d*)?(?:e[+-]?\d+)?)$"
                   rf"|^((?:(?:{_RECIPE})_)?size):\+(\d+(?:\.\d*)?)%$")
EXPECTED = (f"expected err:xN, err_floor:N, size:+N%, tf_err:xN (onnx2tf's TF model), or per recipe "
            f"<recipe>_err:xN / <recipe>_size:+N% (recipes: {', '.join(RECIPES)})")


def parse_thresholds(text: str | None) -> Thresholds:
    """`err:x2,drq_err:x3,err_floor:1e-5,size:+10%`; any subset, the rest default."""
    values: dict[str, float] = {}
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        m = _TERM.match(term)
        if not m:
            raise ValueError(f"bad regression threshold {term!r}: {EXPECTED}")
        key = m.group(1) or m.group(3) or m.group(5)
        if key in values:
            raise ValueError(f"bad regression threshold {term!r}: {key} is given twice")
        number = float(m.group(2) or m.group(4) or m.group(6))
        if not math.isfinite(number):
            raise ValueError(f"bad regression threshold {term!r}: the number must be finite")
        if key.endswith("err") and number <= 1:
            raise ValueError(f"bad regression threshold {term!r}: the factor must be above 1")
        values[key] = number / 100 if key.endswith("size") else number
    base = {k: values.pop(k) for k in ("err", "err_floor", "size") if k in values}
    return Thresholds(**base, per_recipe=values)
