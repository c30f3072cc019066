"""A model's outputs as a flat, named list of tensors (child side, needs torch).

ONNX and TFLite know only flat lists of tensors; a model may return a dict (segmentation
heads: {"out": ..., "aux": ...}), a namedtuple, or nested tuples. Outputs are flattened in
torch's pytree order, which is stable and documented: dicts in their insertion order,
namedtuples in field order, sequences by index, depth first. Each output is named after its
path: a key or field (`out`, `aux`, `heads_0`), or `output_<i>[_<j>...]` when the path holds
only positions (a plain tensor is `output_0`, as before; a key that is no name, like 8, is
`output_8`). None outputs are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._pytree import GetAttrKey, MappingKey, SequenceKey, tree_flatten_with_path

from ..failures import ConversionError, FailureKind


@dataclass(frozen=True)
class OutputStructure:
    names: tuple[str, ...]
    kind: str  # "tensor", "flat" (a tuple/list of tensors) or what needs flattening: "dict", ...

    @property
    def needs_flattening(self) -> bool:
        return self.kind not in ("tensor", "flat")


def _part(key) -> str:
    if isinstance(key, MappingKey):
        return str(key.key)
    if isinstance(key, GetAttrKey):
        return key.name
    if isinstance(key, SequenceKey):
        return str(key.idx)
    return str(key)


def _kind(out) -> str:
    if isinstance(out, torch.Tensor):
        return "tensor"
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return "namedtuple"
    if isinstance(out, dict):
        return "dict"
    if isinstance(out, (list, tuple)):
        return "flat" if all(isinstance(o, torch.Tensor) for o in out) else "nested"
    return type(out).__name__


def flatten(out) -> tuple[list[torch.Tensor], OutputStructure]:
    # a None output (an optional head that is off) is no output at all
    leaves = [(path, leaf) for path, leaf in tree_flatten_with_path(out)[0] if leaf is not None]
    bad = [type(leaf).__name__ for _, leaf in leaves if not isinstance(leaf, torch.Tensor)]
    if bad or not leaves:
        raise ConversionError(FailureKind.EXPORT_ERROR,
                              f"model returns {', '.join(sorted(set(bad))) or 'no tensor'}, not only tensors")
    names = []
    for path, _ in leaves:
        parts = [_part(k) for k in path]
        if all(isinstance(k, SequenceKey) for k in path):
            name = "_".join(["output"] + (parts or ["0"]))
        else:
            name = "_".join(parts)
            if not name[:1].isalpha():  # {8: p3, 16: p4}: ONNX and TF want names, not numbers
                name = f"output_{name}"
        while name in names:  # {'a_0': x, 'a': [y]} would collide
            name += "_"
        names.append(name)
    return [t for _, t in leaves], OutputStructure(tuple(names), _kind(out))


class FlatOutputs(torch.nn.Module):
    """Calls the model and returns its outputs as the flat tuple the exporters need."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return tuple(flatten(self.model(*args))[0])
