"""How onnx2tf lays out inputs, mapped back to PyTorch's (savedmodel.py)."""
from __future__ import annotations


def test_layout_follows_onnx2tf_even_when_dimensions_coincide():
    from converter.stages.savedmodel import layout_perm, signature_keys

    assert layout_perm((1, 64, 64), (1, 64, 64), kept=False) == (0, 2, 1)
    assert layout_perm((1, 64, 64), (1, 64, 64), kept=True) == (0, 1, 2)
    assert layout_perm((1, 3, 8, 8), (1, 8, 8, 3), kept=False) == (0, 2, 3, 1)
    assert layout_perm((1, 12), (1, 12), kept=False) == (0, 1)
    assert signature_keys(["a.b", "a_b", "0x"], "input") == ["a_b", "input_1", "input_2"]
