"""ONNX symbolics for ops the legacy (TorchScript) exporter lacks, as a known fix (child side).

A TorchScript file can only go through the legacy exporter (the dynamo exporter takes no
ScriptModule), so an op without a legacy symbolic fails its export outright. Real models hit
these: transformers' GPT-2 fed only input_ids traces `aten::diff` and a cumulative sum of bools
(its packed-sequence detection in `masking_utils.find_packed_sequence_indices`). Each symbolic here
is written from the op's definition in plain ONNX ops, registered only for a model whose export
fails for want of it (the op unsupported, or the file it wrote invalid), and the model is then
verified like every other (ONNX against PyTorch first).
"""
from __future__ import annotations

import re

import torch
from torch.onnx import symbolic_helper

from ..spec import OPSET

_INT64_MAX = 2**63 - 1


def _constant(g, values):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


@symbolic_helper.parse_args("v", "i", "i", "v", "v")
def _diff(g, self, n, dim, prepend, append):
    """torch.diff: out[i] = x[i + 1] - x[i] along `dim`, `n` times, after prepending / appending."""
    parts = [t for t in (prepend, self, append) if not symbolic_helper._is_none(t)]
    x = g.op("Concat", *parts, axis_i=dim) if len(parts) > 1 else self
    axes = _constant(g, [dim])
    for _ in range(n):
        upper = g.op("Slice", x, _constant(g, [1]), _constant(g, [_INT64_MAX]), axes)
        lower = g.op("Slice", x, _constant(g, [0]), _constant(g, [-1]), axes)
        x = g.op("Sub", upper, lower)
    return x


@symbolic_helper.parse_args("v", "i", "none")
def _cumsum(g, self, dim, dtype=None):
    """torch.cumsum, bool inputs included: torch sums them as int64, ONNX CumSum refuses bool
    (the legacy symbolic passes it through, and the file fails onnx.checker). GPT-2's packed-sequence
    detection takes `(diff != 1).cumsum(-1)`."""
    if symbolic_helper._try_get_scalar_type(self) == symbolic_helper._type_utils.JitScalarType.BOOL:
        self = g.op("Cast", self, to_i=symbolic_helper._type_utils.JitScalarType.INT64.onnx_type())
    return g.op("CumSum", self, _constant(g, dim))


# op -> (its symbolic, what the failure it answers says)
SYMBOLICS = {
    "aten::diff": (_diff, re.compile(r"operator 'aten::diff' to ONNX opset version \d+ is not supported")),
    "aten::cumsum": (_cumsum, re.compile(r"op_type:CumSum\b.*unsupported type: tensor\(bool\)")),
}
_registered: set[str] = set()


def missing_op(exc: BaseException) -> str | None:
    """The op whose missing or wrong legacy symbolic an export failed on, when this module has one."""
    text = str(exc)
    return next((op for op, (_, says) in SYMBOLICS.items() if says.search(text)), None)


def register(op: str) -> None:
    if op not in _registered:
        torch.onnx.register_custom_op_symbolic(op, SYMBOLICS[op][0], OPSET)
        _registered.add(op)
