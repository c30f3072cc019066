"""What counts as a regression against the baseline: `drq_err:x2,fp32_err:x2,err_floor:1e-5,size:+10%`.

A setting (parsed where it is given) that the gate reads; neither imports the other.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    drq_err: float = 2.0      # gated when the error grows by this factor ...
    fp32_err: float = 2.0
    err_floor: float = 1e-5   # ... and ends above this floor (noise at 1e-7 is no regression)
    size: float = 0.10        # deliverable growth beyond +10 %

    def describe(self) -> str:
        return (f"drq_err:x{self.drq_err:g},fp32_err:x{self.fp32_err:g},err_floor:{self.err_floor:g},"
                f"size:+{self.size * 100:g}%")


_TERM = re.compile(r"^(drq_err|fp32_err):x(\d+(?:\.\d*)?)$|^(err_floor):(\d+(?:\.\d*)?(?:e[+-]?\d+)?)$"
                   r"|^(size):\+(\d+(?:\.\d*)?)%$")


def parse_thresholds(text: str | None) -> Thresholds:
    """`drq_err:x2,fp32_err:x3,err_floor:1e-5,size:+10%`; any subset, the rest default."""
    values = {}
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        m = _TERM.match(term)
        if not m:
            raise ValueError(f"bad regression threshold {term!r}: expected drq_err:xN, fp32_err:xN, "
                             "err_floor:N or size:+N%")
        key = m.group(1) or m.group(3) or m.group(5)
        if key in values:
            raise ValueError(f"bad regression threshold {term!r}: {key} is given twice")
        number = float(m.group(2) or m.group(4) or m.group(6))
        if not math.isfinite(number):
            raise ValueError(f"bad regression threshold {term!r}: the number must be finite")
        if key.endswith("_err") and number <= 1:
            raise ValueError(f"bad regression threshold {term!r}: the factor must be above 1")
        values[key] = number / 100 if key == "size" else number
    return Thresholds(**values)


