"""The child side: everything that runs inside the isolated conversion process
(`python -m converter.stages.pipeline JOB.json`), and the deployability check it starts.
Only this package imports torch, onnx, onnx2tf and TensorFlow; the parent side never does.
"""
