"""PyTorch -> ONNX -> TensorFlow -> TFLite conversion with verification.

Kept import-light on purpose: the parent process (CLI, pytest workers) must never import
torch or tensorflow; the heavy stages live in modules only the isolated child imports.
"""

__version__ = "0.4.0"  # the one place: pyproject.toml reads it, --version prints it
