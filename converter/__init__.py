"""PyTorch -> ONNX -> TensorFlow -> TFLite conversion with verification.

Kept import-light on purpose: the parent process (CLI, pytest workers) must never import
torch or tensorflow; the heavy stages live in modules only the isolated child imports.
"""
