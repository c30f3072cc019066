"""The ONNX graph made ready for onnx2tf, before its first run (child side).

Two things make onnx2tf's cheap (non-strict) mode convert real models right the first time:

- **Simplification, in this process.** onnx2tf's op handlers need static shapes and folded
  constants: without them, 10 of 13 real architectures failed (a LayerNorm over 197 tokens
  taken for 192 channels, a constant of the wrong shape, a convolution fed the wrong layout).
  onnx2tf would run onnxsim itself, three times, each in a subprocess that loads the whole model
  again; onnxsim's `simplify` here, until the graph stops shrinking, takes a second or two
  (0.85 s on ViT-tiny, against 6 s of subprocesses).
- **Rewrites of patterns that onnx2tf's non-strict mode mis-converts,** each an exact algebraic
  identity, each recorded as a fix, and verified like everything else:
  * `layer_scale`: a constant multiplied (or added) right after a channels-last -> channels-first
    Transpose (torchvision's ConvNeXt: `layer_scale * permute(block(x))`) is applied before the
    Transpose instead. Without strict mode, onnx2tf broadcasts the constant in the wrong layout
    ("Dimensions must be equal, but are 56 and 96"); its strict mode finds the right layout by
    searching, at 5x the time.
  * `group_norm`: GroupNorm(1, C), which the exporter writes as a Reshape into one group ->
    InstanceNormalization over that 3-D view, becomes explicit mean and variance over every
    non-batch axis of the tensor, then the same view.
    onnx2tf takes the 3-D view for a channels-first sequence and normalises over the wrong axis
    (MobileViT-v2: float32 range-relative error 0.53 at the first norm).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..results import Fix, GraphResult

MAX_SIMPLIFY_BYTES = 2 * 2**30  # protobuf's limit; onnx2tf splits larger models itself
SIMPLIFY_PASSES = 3


def prepare(onnx_path: Path, out_path: Path, *, rewrite: bool = True,
            integer: bool = False) -> tuple[GraphResult, tuple[Fix, ...]]:
    """Simplify `onnx_path` into `out_path`, then apply the rewrites (each a fix); the input is left
    as it is. The result says why onnx2tf's strict mode is needed on it, if it is."""
    import onnx

    start = time.perf_counter()
    model = onnx.load(str(onnx_path))
    before = len(model.graph.node)
    simplified = False
    if Path(onnx_path).stat().st_size < MAX_SIMPLIFY_BYTES:
        model, simplified = _simplify(model)
    seconds = time.perf_counter() - start
    fixes = []
    if rewrite:
        for name, apply, reason in REWRITES + (INTEGER_REWRITES if integer else ()):
            count = apply(model)
            if count:
                fixes.append(Fix("graph_rewrite", name, f"{reason} ({count}x)"))
    onnx.save(model, str(out_path))
    return GraphResult(before, len(model.graph.node), round(seconds, 3), simplified, strict_reason(model)), tuple(fixes)


# ops whose conversion depends on an axis that onnx2tf maps between layouts
AXIS_OPS = ("LayerNormalization", "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
            "ReduceProd", "ArgMax", "ArgMin")


def strict_reason(model) -> str | None:
    """Why this graph needs onnx2tf's strict mode, before any run: an axis-dependent op on a 3-D
    tensor whose last two dims are equal ([1, 64, 64]: SegFormer's reduced keys, 64 tokens of 64
    channels). onnx2tf treats a 3-D tensor as channels-first and moves it to channels-last unless
    it can tell otherwise; when the dims are equal no shape shows the mistake, so its non-strict
    mode normalises over the wrong axis without a word, and only its strict mode's numeric check
    finds the right one."""
    g = _Graph(model)
    for node in g.graph.node:
        if node.op_type not in AXIS_OPS or not node.input:
            continue
        shape = g.shape(node.input[0])
        if shape is not None and len(shape) == 3 and shape[1] == shape[2] > 1:
            return (f"{node.op_type} {node.name or node.output[0]} works on a {list(shape)} tensor, whose layout "
                    "onnx2tf's non-strict mode cannot tell")
    return None


def _simplify(model):
    """onnxsim until the node count stops falling (onnx2tf runs it three times for the same reason)."""
    import traceback

    # before onnxsim: onnxsim's own import runs `pip install onnxruntime` (a package index, at run
    # time, into the user's environment) when onnxruntime cannot be imported; this fails in words
    import onnxruntime  # noqa: F401
    import onnxsim

    try:
        for _ in range(SIMPLIFY_PASSES):
            simpler, _ = onnxsim.simplify(model)
            done = len(simpler.graph.node) >= len(model.graph.node)
            model = simpler
            if done:
                break
        return model, True
    except Exception:  # onnxsim refuses some graphs; onnx2tf then works on the exported one
        print("--- onnxsim could not simplify the graph; converting it as exported:")
        traceback.print_exc()
        return model, False


# --- the graph, as a small index ------------------------------------------------------------

class _Graph:
    def __init__(self, model):
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.constants = {n.output[0]: n for n in self.graph.node if n.op_type == "Constant" and not n.input}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.graph.output}
        self._to_array = numpy_helper.to_array
        self._counter = 0

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return self._to_array(self.initializers[name])
        node = self.constants.get(name)
        if node is not None:
            from onnx import helper

            value = next((a for a in node.attribute if a.name == "value"), None)
            return self._to_array(helper.get_attribute_value(value)) if value is not None else None
        return None

    def shape(self, name: str) -> list[int] | None:
        """A tensor's static shape, where shape inference (onnxsim's) recorded one."""
        for info in list(self.graph.value_info) + list(self.graph.input):
            if info.name == name:
                dims = info.type.tensor_type.shape.dim
                return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        return None

    def only_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def add_initializer(self, array: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        self._counter += 1
        name = f"{hint}__rewritten_{self._counter}"
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def attribute(self, node, name: str, default=None):
        from onnx import helper

        found = next((a for a in node.attribute if a.name == name), None)
        return helper.get_attribute_value(found) if found is not None else default

    def replace(self, old_nodes, new_nodes) -> None:
        """Put `new_nodes` where the first of `old_nodes` was (the order stays topological)."""
        nodes = list(self.graph.node)
        at = min(nodes.index(n) for n in old_nodes)
        kept = [n for n in nodes if not any(n is o for o in old_nodes)]
        kept[at:at] = new_nodes
        del self.graph.node[:]
        self.graph.node.extend(kept)


def _channels_first_restore(perm) -> bool:
    rank = len(perm)
    return 3 <= rank <= 5 and list(perm) == [0, rank - 1, *range(1, rank - 1)]


def rewrite_layer_scale(model) -> int:
    """Op(Transpose(x, perm), C) -> Transpose(Op(x, C'), perm) for a constant C with more than one
    element and a channels-last -> channels-first perm: C' is C in x's layout."""
    from onnx import helper

    count = 0
    while True:
        g = _Graph(model)
        for node in g.graph.node:
            if node.op_type not in ("Mul", "Add", "Sub", "Div") or len(node.input) != 2:
                continue
            found = _transposed_operand(g, node)
            if found is None:
                continue
            position, transpose, const = found
            perm = list(g.attribute(transpose, "perm"))
            rank = len(perm)
            shaped = const.reshape((1,) * (rank - const.ndim) + const.shape)
            moved = np.transpose(shaped, np.argsort(perm))
            name = g.add_initializer(moved, node.name or "layer_scale")
            inputs = list(node.input)
            inputs[position] = transpose.input[0]
            inputs[1 - position] = name
            inner = f"{node.output[0]}__before_transpose"
            applied = helper.make_node(node.op_type, inputs, [inner], name=f"{node.name}__moved")
            back = helper.make_node("Transpose", [inner], list(node.output), name=f"{transpose.name}__moved", perm=perm)
            g.replace([transpose, node], [applied, back])
            count += 1
            break
        else:
            return count


def _transposed_operand(g: _Graph, node):
    for position in (0, 1):
        transpose = g.producer.get(node.input[position])
        const = g.constant(node.input[1 - position])
        if (transpose is None or transpose.op_type != "Transpose" or const is None or const.size < 2
                or g.only_consumer(transpose.output[0]) is not node):
            continue
        perm = g.attribute(transpose, "perm")
        if perm is None or not _channels_first_restore(perm) or const.ndim > len(perm):
            continue
        return position, transpose, const
    return None


def rewrite_group_norm(model) -> int:
    """Reshape(x, [0, 1, -1]) -> InstanceNormalization (GroupNorm with one group, as the exporter
    writes it) -> explicit mean and variance over every non-batch axis of x, then the same view."""
    from onnx import helper

    count = 0
    while True:
        g = _Graph(model)
        for norm in g.graph.node:
            if norm.op_type != "InstanceNormalization":
                continue
            found = _one_group_norm(g, norm)
            if found is None:
                continue
            view, x, rank = found
            eps = float(g.attribute(norm, "epsilon", 1e-5))
            scale, bias = g.constant(norm.input[1]), g.constant(norm.input[2])
            axes = list(range(1, rank))
            base = norm.name or "group_norm"
            names = {k: f"{base}__{k}" for k in ("mean", "centred", "square", "var", "var_eps", "std", "normed",
                                                  "scaled", "shifted")}
            eps_name = g.add_initializer(np.array(eps, dtype=np.float32), base)
            axes_name = g.add_initializer(np.array(axes, dtype=np.int64), base) if g.opset >= 18 else None

            def reduce(inp, out):
                if axes_name:  # opset 18 moved ReduceMean's axes into an input
                    return helper.make_node("ReduceMean", [inp, axes_name], [out], keepdims=1)
                return helper.make_node("ReduceMean", [inp], [out], axes=axes, keepdims=1)

            nodes = [reduce(x, names["mean"]),
                     helper.make_node("Sub", [x, names["mean"]], [names["centred"]]),
                     helper.make_node("Mul", [names["centred"], names["centred"]], [names["square"]]),
                     reduce(names["square"], names["var"]),
                     helper.make_node("Add", [names["var"], eps_name], [names["var_eps"]]),
                     helper.make_node("Sqrt", [names["var_eps"]], [names["std"]]),
                     helper.make_node("Div", [names["centred"], names["std"]], [names["normed"]])]
            result = names["normed"]
            if not (np.all(scale == 1) and np.all(bias == 0)):
                nodes += [helper.make_node("Mul", [result, g.add_initializer(scale.reshape(()).astype(np.float32), base)],
                                           [names["scaled"]]),
                          helper.make_node("Add", [names["scaled"], g.add_initializer(bias.reshape(()).astype(np.float32),
                                                                                       base)], [names["shifted"]])]
                result = names["shifted"]
            nodes.append(helper.make_node("Reshape", [result, view.input[1]], list(norm.output)))  # the same view
            g.replace([view, norm], nodes)
            count += 1
            break
        else:
            return count


def _one_group_norm(g: _Graph, norm):
    """(the Reshape into one group, x, x's rank) when `norm` normalises all of x as one group."""
    view = g.producer.get(norm.input[0])
    if view is None or view.op_type != "Reshape" or g.only_consumer(view.output[0]) is not norm:
        return None
    shape, scale, bias = g.constant(view.input[1]), g.constant(norm.input[1]), g.constant(norm.input[2])
    if shape is None or scale is None or bias is None or scale.size != 1 or bias.size != 1 or len(shape) != 3:
        return None
    if int(shape[1]) != 1 or int(shape[2]) != -1:
        return None
    x_shape = g.shape(view.input[0])
    if x_shape is None or len(x_shape) < 2 or int(shape[0]) not in (0, x_shape[0]):
        return None
    return view, view.input[0], len(x_shape)


def rewrite_tokens_image(model) -> int:
    """The two views vision transformers switch between, each made a 4-D (or 5-D) transpose next to
    a reshape:  Transpose(Reshape(x [N,C,H,W] -> [N,C,HW]), [0,2,1])  (flatten(2).transpose(1, 2))
    becomes Reshape(Transpose(x, [0,2,3,1]) -> [N,HW,C]), and  Reshape(Transpose(t [N,L,C], [0,2,1])
    -> [N,C,H,W])  becomes Transpose(Reshape(t -> [N,H,W,C]), [0,3,1,2]). Exact; onnx2tf then sees a
    channels-last transpose it knows, instead of a 3-D one whose layout it must guess."""

    count = 0
    while True:
        g = _Graph(model)
        for node in g.graph.node:
            found = _image_to_tokens(g, node) or _tokens_to_image(g, node)
            if found is None:
                continue
            old, new = found
            g.replace(old, new)
            count += 1
            break
        else:
            return count


def _static(shape) -> bool:
    return shape is not None and all(int(d) > 0 for d in shape)


def _image_to_tokens(g: _Graph, transpose):
    from onnx import helper

    if transpose.op_type != "Transpose" or list(g.attribute(transpose, "perm") or []) != [0, 2, 1]:
        return None
    reshape = g.producer.get(transpose.input[0])
    if reshape is None or reshape.op_type != "Reshape" or g.only_consumer(reshape.output[0]) is not transpose:
        return None
    x = reshape.input[0]
    image, flat = g.shape(x), g.shape(reshape.output[0])
    if not (_static(image) and _static(flat)) or not 4 <= len(image) <= 5 or len(flat) != 3:
        return None
    if flat[:2] != image[:2] or flat[2] != int(np.prod(image[2:])):
        return None  # not a flattening of the spatial axes
    rank = len(image)
    last = [0, *range(2, rank), 1]
    inner = f"{transpose.output[0]}__channels_last"
    shape = g.add_initializer(np.array([image[0], flat[2], image[1]], dtype=np.int64), reshape.name or "tokens")
    return [reshape, transpose], [
        helper.make_node("Transpose", [x], [inner], name=f"{transpose.name}__image", perm=last),
        helper.make_node("Reshape", [inner, shape], list(transpose.output), name=f"{reshape.name}__tokens")]


def _tokens_to_image(g: _Graph, reshape):
    from onnx import helper

    if reshape.op_type != "Reshape":
        return None
    transpose = g.producer.get(reshape.input[0])
    if transpose is None or transpose.op_type != "Transpose" or list(g.attribute(transpose, "perm") or []) != [0, 2, 1]:
        return None
    if g.only_consumer(transpose.output[0]) is not reshape:
        return None
    tokens, image = g.shape(transpose.input[0]), g.shape(reshape.output[0])
    if not (_static(tokens) and _static(image)) or len(tokens) != 3 or not 4 <= len(image) <= 5:
        return None
    if [tokens[0], tokens[2]] != image[:2] or tokens[1] != int(np.prod(image[2:])):
        return None
    rank = len(image)
    inner = f"{reshape.output[0]}__channels_last"
    shape = g.add_initializer(np.array([image[0], *image[2:], image[1]], dtype=np.int64), reshape.name or "image")
    return [transpose, reshape], [
        helper.make_node("Reshape", [transpose.input[0], shape], [inner], name=f"{reshape.name}__image"),
        helper.make_node("Transpose", [inner], list(reshape.output), name=f"{transpose.name}__image",
                         perm=[0, rank - 1, *range(1, rank - 1)])]


def rewrite_max_pool_padding(model) -> int:
    """MaxPool with explicit pads -> Pad(mode="edge") -> MaxPool without pads. Exact for max pooling
    (without dilation or ceil_mode): an edge-padded position repeats the border element, which lies
    in every window that covers the position, so no maximum changes. onnx2tf pads a MaxPool with
    the float32 minimum instead (-3.4e38), which full-integer quantization takes as the tensor's
    range: the PADV2 gets a scale of 1e36, and the TFLite kernels abort on the file."""
    from onnx import helper

    count = 0
    while True:
        g = _Graph(model)
        for node in g.graph.node:
            pads = g.attribute(node, "pads")
            if (node.op_type != "MaxPool" or len(node.output) != 1 or not pads or not any(pads)
                    or g.attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                    or any(d != 1 for d in g.attribute(node, "dilations", [1] * (len(pads) // 2)))
                    or g.attribute(node, "ceil_mode", 0)):
                continue
            spatial = len(pads) // 2
            full = [0, 0, *pads[:spatial], 0, 0, *pads[spatial:]]  # batch and channel axes unpadded
            amounts = g.add_initializer(np.array(full, np.int64), node.name or "max_pool_pads")
            padded = f"{node.output[0]}__edge_padded"
            pad = helper.make_node("Pad", [node.input[0], amounts], [padded], name=f"{node.name}__edge_pad", mode="edge")
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in ("pads", "auto_pad")}
            pool = helper.make_node("MaxPool", [padded], list(node.output), name=f"{node.name}__unpadded", **attributes)
            g.replace([node], [pad, pool])
            count += 1
            break
        else:
            return count


# for the full-integer recipes only: the float recipes keep onnx2tf's own padding (one op fewer)
INTEGER_REWRITES: tuple[tuple[str, Callable, str], ...] = (
    ("max_pool_padding", rewrite_max_pool_padding,
     "a padded MaxPool was given edge padding (exact for a maximum) in place of onnx2tf's float32-minimum "
     "padding, which full-integer quantization cannot represent"),
)

# (name, rewrite, why): applied in this order, each counted and recorded when it applied
REWRITES: tuple[tuple[str, Callable, str], ...] = (
    ("tokens_image", rewrite_tokens_image,
     "an image flattened into tokens (or tokens folded back into an image) was written with a 4-D transpose, "
     "whose layout onnx2tf knows, instead of a 3-D one it must guess (and gets wrong when tokens and channels "
     "are as many)"),
    ("layer_scale", rewrite_layer_scale,
     "a constant applied right after a channels-last -> channels-first transpose was moved before it, "
     "where onnx2tf's non-strict mode broadcasts it right"),
    ("group_norm", rewrite_group_norm,
     "GroupNorm with one group (a Reshape into one group -> InstanceNormalization) written as explicit mean and "
     "variance, which onnx2tf's non-strict mode converts right"),
)


def run_onnxruntime(path: Path, input_names, arrays, threads: int) -> tuple[list[str], list[np.ndarray]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feed = {n: a for n, a in zip(input_names, arrays) if n in wanted}
    names = [o.name for o in session.get_outputs()]
    return names, session.run(names, feed)
