"""Stage 3: ONNX -> TensorFlow SavedModel with onnx2tf, offline, on the fast path.

onnx2tf's own TFLite export costs O(parameters) (minutes on resnet18); asking it for the
Keras model only and writing the SavedModel ourselves is ~10x faster with identical outputs.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..failures import ConversionError, FailureKind, stage_step
from ..results import SavedModelResult
from ..spec import ModelSpec

# onnx2tf fetches calibration images from the internet for 3-channel image inputs; it only
# needs an array of this shape (None crashes it), and it never changes the conversion.
CALIBRATION_SHAPE = (20, 128, 128, 3)


def _offline_calibration_data():
    return np.zeros(CALIBRATION_SHAPE, dtype=np.float32)


def prepare_onnx2tf():
    """Import onnx2tf with its network download replaced and onnxsim reachable on PATH."""
    venv_bin = os.path.dirname(sys.executable)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    import onnx2tf  # noqa: F401  (registers onnx2tf.onnx2tf in sys.modules)

    _as_importing_onnx2tf_leaves_it()
    sys.modules["onnx2tf.onnx2tf"].download_test_image_data = _offline_calibration_data
    import onnx2tf.utils.common_functions as common

    common.download_test_image_data = _offline_calibration_data
    return sys.modules["onnx2tf.onnx2tf"]


def _as_importing_onnx2tf_leaves_it() -> None:
    """What importing onnx2tf does to the process, done again here: a child forked from the
    preloaded process imported it before its load stage and was reset to the state before it
    (forkserver.py), so that load and export run as in a spawned child, and onnx2tf as in one."""
    import random

    import tensorflow as tf
    import tf_keras

    sys.setrecursionlimit(2147483647)
    warnings.simplefilter("ignore")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    random.seed(0)
    np.random.seed(0)
    tf.random.set_seed(0)
    tf_keras.utils.set_random_seed(0)


def signature_keys(names, prefix: str) -> list[str]:
    """Valid, unique TF signature names ('a.b' and 'a_b' must not both become 'a_b')."""
    keys: list[str] = []
    for index, name in enumerate(names):
        key = re.sub(r"\W", "_", name)
        if not key or key[0].isdigit() or key in keys:
            key = f"{prefix}_{index}"
        while key in keys:  # ["output_1", "1x"]: the fallback name may be taken already
            key += "_"
        keys.append(key)
    return keys


def layout_perm(torch_shape: tuple[int, ...], tf_shape: tuple[int, ...], kept: bool) -> tuple[int, ...]:
    """The permutation that turns a torch-layout input into what the TF model expects.

    onnx2tf makes every 3-5-D input channels-last unless told to keep it; that rule decides
    (shapes alone cannot when dimensions coincide, e.g. [1, 64, 64]), the shape only checks it.
    """
    rank = len(torch_shape)
    identity = tuple(range(rank))
    channels_last = (0, *range(2, rank), 1)
    expected = channels_last if 3 <= rank <= 5 and not kept else identity
    for perm in (expected, identity, channels_last):
        if tuple(tf_shape) == tuple(torch_shape[i] for i in perm):
            return perm
    raise ConversionError(FailureKind.SHAPE_MISMATCH,
                          f"onnx2tf made input shape {list(tf_shape)} from {list(torch_shape)}, "
                          "which is neither the same layout nor channels-last")


def kept_layout_inputs(spec: ModelSpec, input_names, input_shapes) -> list[str]:
    return [n for n, s in zip(input_names, input_shapes) if spec.layout == "nchw" and 3 <= len(s) <= 5]


# How onnx2tf is run. Its "strict mode" searches for the best transposition at each checked op
# by building and running a Keras model from the input up to that op: quadratic in depth, 72% of
# a ConvNeXt-tiny's time. Its own onnxsim runs three times in a subprocess of up to 1 GB. So the
# graph is prepared here first (graph.py: simplified in-process, patterns rewritten), and onnx2tf
# runs on it without either: `simplified`. A graph that needs the accuracy search (graph.py's
# strict_reason) gets `strict` from its first run; a model that fails in one mode is converted in
# the next (the fix "onnx2tf_mode"), and `defaults` is onnx2tf as it comes, on the exported graph
# (the last resort, and what `auto_fixes = false` runs).
ONNX2TF_MODES = {"simplified": {"disable_strict_mode": True, "not_use_onnxsim": True},
                 "strict": {"not_use_onnxsim": True},
                 "defaults": {}}
PREPARED_MODES = ("simplified", "strict")  # they convert the prepared graph, not the exported one


def onnx2tf_options(onnx_copy: Path, out_dir: Path, keep, pseudo_ops, mode: str) -> dict:
    """The options every onnx2tf run here shares (the conversion and its diagnosis)."""
    return dict(input_onnx_file_path=str(onnx_copy), output_folder_path=str(out_dir),
                output_signaturedefs=True, non_verbose=True,
                keep_ncw_or_nchw_or_ncdhw_input_names=list(keep) or None,
                replace_to_pseudo_operators=list(pseudo_ops) or None, **ONNX2TF_MODES[mode])


def to_savedmodel(spec: ModelSpec, onnx_path: Path, input_names, input_shapes, output_names,
                  work_dir: Path, pseudo_ops: tuple[str, ...] = (), mode: str = "simplified",
                  arrays=None) -> tuple[SavedModelResult, list]:
    """The SavedModel, and the TF model's outputs on `arrays` (the sample inputs, torch layout;
    each output in its TF layout): the float32 check of onnx2tf's conversion, before any TFLite."""
    start = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    copy = work_dir / "onnx2tf_input.onnx"  # onnx2tf rewrites its input file in place
    shutil.copyfile(onnx_path, copy)
    keep = kept_layout_inputs(spec, input_names, input_shapes)
    import tf_keras

    try:
        model = _keras_model(copy, work_dir, keep, pseudo_ops, len(input_shapes), mode)
        perms = tuple(layout_perm(tuple(s), tuple(int(d) for d in k.shape), n in keep)
                      for n, s, k in zip(input_names, input_shapes, model.inputs))
        in_keys, out_keys = signature_keys(input_names, "input"), signature_keys(output_names, "output")
        outputs = _run(model, arrays, perms) if arrays is not None else []
        path = work_dir / "saved_model"
        _write_savedmodel(model, in_keys, out_keys, path)
        del model
    finally:  # Keras's global graph state keeps every layer alive otherwise, a failed attempt's too
        tf_keras.backend.clear_session()
    copy.unlink(missing_ok=True)
    return SavedModelResult(
        path=str(path), layout=spec.layout,
        input_names=tuple(zip(input_names, in_keys)), input_perms=perms, pseudo_ops=tuple(pseudo_ops),
        output_names=tuple(zip(output_names, out_keys)),
        seconds=time.perf_counter() - start, onnx2tf_mode=mode, onnx_path=str(onnx_path)), outputs


def _run(model, arrays, perms) -> list[np.ndarray]:
    """The Keras model onnx2tf built, on the sample inputs in its layout (eager: no graph to trace)."""
    feed = [np.ascontiguousarray(np.transpose(a, p)) for a, p in zip(arrays, perms)]
    outs = model(feed if len(feed) > 1 else feed[0], training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return [np.asarray(o) for o in outs]


# Before converting, onnx2tf runs onnxruntime once over the whole graph with every node's output
# kept. Only its strict mode's accuracy search reads them, and, in any mode, the handlers of these
# ops (checked against onnx2tf 1.29.24's ops/ and onnx2tf.py); on ResNet-18 they are 80 MB.
NEEDS_ONNX_OUTPUTS = ("Einsum", "OneHot", "NonZero")


class _NotNeeded(Exception):
    """Raised in place of onnx2tf's all-outputs inference, which it then skips as it would for a
    graph onnxruntime cannot run ("The optimization process for shape estimation is skipped")."""


def _skip_all_outputs_inference(converter_module, onnx_copy: Path, mode: str):
    import onnx

    from .fixes import op_types

    if ONNX2TF_MODES[mode].get("disable_strict_mode") and \
            not op_types(onnx.load(str(onnx_copy), load_external_data=False)) & set(NEEDS_ONNX_OUTPUTS):
        def skipped(*args, **kwargs):
            raise _NotNeeded("not needed outside strict mode for this graph")
        return skipped
    return converter_module.dummy_onnx_inference


def _keras_model(onnx_copy: Path, work_dir: Path, keep, pseudo_ops, n_inputs: int, mode: str):
    """The tf_keras model only, no files of onnx2tf's own (its TFLite export costs minutes)."""
    converter_module = prepare_onnx2tf()
    inference = converter_module.dummy_onnx_inference
    converter_module.dummy_onnx_inference = _skip_all_outputs_inference(converter_module, onnx_copy, mode)
    try:
        with stage_step(FailureKind.SAVEDMODEL_ERROR, "onnx2tf"):
            model = converter_module.convert(**onnx2tf_options(onnx_copy, work_dir / "onnx2tf_out", keep, pseudo_ops,
                                                               mode),
                                             disable_model_save=True)
    except SystemExit as exc:  # onnx2tf's way of giving up
        raise ConversionError(FailureKind.SAVEDMODEL_ERROR,
                              f"onnx2tf gave up (exit status {exc.code}); its reason is in the log") from exc
    finally:
        converter_module.dummy_onnx_inference = inference
    if model is None or len(model.inputs) != n_inputs:
        raise ConversionError(FailureKind.SAVEDMODEL_ERROR, "onnx2tf returned no usable Keras model")
    return model


def _write_savedmodel(model, in_keys: list[str], out_keys: list[str], path: Path) -> None:
    """One `serving_default` signature, inputs and outputs named by key (TFLite keeps the names)."""
    import tensorflow as tf
    import tf_keras

    specs = [tf.TensorSpec(k.shape, k.dtype, name=key) for k, key in zip(model.inputs, in_keys)]

    @tf.function(input_signature=specs)
    def serve(*args):
        outs = model(list(args) if len(args) > 1 else args[0], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {key: out for key, out in zip(out_keys, outs)}

    shutil.rmtree(path, ignore_errors=True)
    with stage_step(FailureKind.SAVEDMODEL_ERROR, "writing the SavedModel failed"):
        archive = tf_keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve)
        archive.write_out(str(path))
