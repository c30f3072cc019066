"""What verification found, per output and per file: an output's comparison against PyTorch (and
its task's verdict), and whether a file runs where it goes (the TFLite runtime's kernels, TFLite
Micro). Frozen records, part of each Deliverable in results.py; serialised by protocol.py."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskCheck:
    """An output judged by what it means (its declared task, tasks.py): how many of its decisions
    (rows, positions, anchors) or embeddings agree with PyTorch's over the verification inputs."""

    __test__ = False
    task: str            # classification | dense | embedding | detection
    units: int           # decisions (or embeddings) judged
    agree: int           # those that are PyTorch's
    near_ties: int       # those that differ where PyTorch's own decision is within the tolerance of a tie
    flipped: int         # those that differ where PyTorch's decision is clear (or embeddings that turned)
    allowed: int         # clear flips the task allows (tasks.CLEAR_FLIPS of the units)
    detail: str = ""     # what a decision is: "top-1 class", "score above 0.5", "cosine >= 0.99"
    min_cosine: float | None = None  # embedding: the worst input's cosine
    detected: int | None = None      # detection: anchors PyTorch detects with

    @property
    def passed(self) -> bool:
        return self.flipped <= self.allowed

    @property
    def agreement(self) -> float:
        return self.agree / self.units if self.units else 1.0

    def describe(self) -> str:
        what = "embeddings" if self.task == "embedding" else {"classification": "rows", "dense": "positions",
                                                               "detection": "anchors"}.get(self.task, "units")
        text = f"{self.task}: {self.agree}/{self.units} {what} agree ({self.detail})"
        if self.near_ties:
            text += f", {self.near_ties} near ties differ"
        text += f", {self.flipped} clear {'differ' if self.task == 'embedding' else 'flips'}"
        text += f" {'<=' if self.passed else '>'} {self.allowed} allowed"
        if self.min_cosine is not None:
            text += f", worst cosine {self.min_cosine:.4f}"
        if self.detected is not None:
            text += f", {self.detected} anchors detect in PyTorch"
        return text


@dataclass(frozen=True)
class OutputComparison:
    """One output of a candidate (ONNX, or a recipe's TFLite file) against PyTorch."""

    __test__ = False
    name: str
    reference_shape: tuple[int, ...]
    candidate_shape: tuple[int, ...]
    max_abs_err: float
    mean_abs_err: float
    output_range: float
    range_rel_err: float
    cosine: float
    top1_agreement: float | None
    mismatched: int
    elements: int
    tolerance: float
    p99_rel_err: float | None = None   # the 99th percentile of |error| / range: the max without its worst 1 %
    channel_axis: int | None = None    # judged per channel along this axis (the sidecar's channel_axis)
    worst_channel: int | None = None   # the channel whose own range-relative error is range_rel_err
    samples: int = 1                   # verification inputs the figures cover (stacked along the batch axis)
    # the verdict of the output's declared task (tasks.py), which is then the file's verdict on it
    task: TaskCheck | None = None
    outliers: int = 0                  # elements that may exceed the tolerance (recipes.Recipe.outliers)
    # a quantized output of rank 3 or more that declares no task: its channels along axis 1, each against
    # its own range (the worst one's error, which, how many elements are off so)
    channel_err: float | None = None
    channel_worst: int | None = None
    channel_off: int = 0

    @property
    def tensor_passed(self) -> bool:
        """The tensor check: the range-relative max error within the tolerance, or every element but
        a few outliers (a quantized recipe's allowance) within it, all of them finite; and so for each
        channel along axis 1 against its own range, where that is judged."""
        def within(err: float, off: int) -> bool:
            return err <= self.tolerance or (math.isfinite(err) and off <= self.outliers)

        return within(self.range_rel_err, self.mismatched) and (
            self.channel_err is None or within(self.channel_err, self.channel_off))

    @property
    def channel_note(self) -> str:
        """Where the whole tensor passes and a channel along axis 1 does not, that channel's figures."""
        if self.channel_err is None or self.channel_err <= self.tolerance or self.channel_off <= self.outliers:
            return ""
        return (f"; but channel {self.channel_worst} along axis 1 is off by {self.channel_err:.3g} of its own range "
                f"({self.channel_off} elements beyond {self.tolerance:.3g}): declare what the output means (task = "
                "\"detection\", ...), or task = \"regression\" to judge the whole tensor only")

    @property
    def shape_ok(self) -> bool:
        return tuple(self.reference_shape) == tuple(self.candidate_shape)

    @property
    def passed(self) -> bool:
        """The task's verdict where one is declared, else the tensor check."""
        if not self.shape_ok:
            return False
        return self.task.passed if self.task is not None else self.tensor_passed

    @property
    def where(self) -> str:
        """Which part of the output the error is of, when it is judged per channel."""
        if self.channel_axis is None or self.worst_channel is None:
            return ""
        return f" (channel {self.worst_channel} along axis {self.channel_axis}, judged against its own range)"

    def brief(self, label: str) -> str:
        """What a one-line failure message says of it (describe() has every figure)."""
        if not self.shape_ok:
            return self.describe(label)
        tensor = (f"range-relative max error {self.range_rel_err:.3g} {'<=' if self.range_rel_err <= self.tolerance else '>'} "
                  f"tolerance {self.tolerance:.3g} ({self.mismatched}/{self.elements} elements off {self.over}"
                  f"{self.allowance}, cosine {self.cosine:.4f}){self.channel_note}")
        if self.task is not None:
            return f"{label} output '{self.name}' judged by its task, {self.task.describe()} {self.over}; tensor: {tensor}"
        return f"{label} output '{self.name}'{self.where}: {tensor}"

    @property
    def allowance(self) -> str:
        """The outliers a quantized recipe allows, where it allows any."""
        return f", up to {self.outliers} allowed" if self.outliers and self.task is None else ""

    @property
    def over(self) -> str:
        """Over how many verification inputs the figures are: every figure says it."""
        return f"over {self.samples} input{'' if self.samples == 1 else 's'}"

    def describe(self, label: str) -> str:
        if not self.shape_ok:
            return (f"{label} output '{self.name}': shape {list(self.candidate_shape)} "
                    f"!= PyTorch {list(self.reference_shape)}")
        top1 = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.1%}"
        p99 = "" if self.p99_rel_err is None else f", p99 {self.p99_rel_err:.3g}"
        tensor = (f"range-relative max error {self.range_rel_err:.3g} "
                  f"{'<=' if self.range_rel_err <= self.tolerance else '>'} tolerance {self.tolerance:.3g} "
                  f"({self.mismatched}/{self.elements} elements off {self.over}{self.allowance}; max abs "
                  f"{self.max_abs_err:.3g}, mean abs {self.mean_abs_err:.3g}, output range {self.output_range:.3g}{p99}, "
                  f"cosine {self.cosine:.6f}{top1}){self.channel_note}")
        if self.task is not None:
            return (f"{label} output '{self.name}' judged by its task, {self.task.describe()} {self.over}; "
                    f"tensor: {tensor}")
        return f"{label} output '{self.name}'{self.where}: {tensor}"


@dataclass(frozen=True)
class MicroCheck:
    """An int8_io file on TensorFlow Lite Micro's interpreter (the `tflite-micro` package)."""

    runs: bool
    message: str = ""                # why it does not run (the ops Micro lacks), or how it disagrees
    arena_bytes: int | None = None   # the tensor arena it allocated: what the device must reserve
    agrees: bool | None = None       # its outputs are the TFLite runtime's (within one quantization step)

    @property
    def ok(self) -> bool:
        return self.runs and self.agrees is not False


@dataclass(frozen=True)
class RuntimeCheck:
    """Does a TFLite file run where it goes: on the TFLite runtime in a process without TensorFlow
    (as on a phone), with XNNPACK (the runtime's default) and with the reference kernels (what runs
    where XNNPACK does not), both judged against PyTorch; the ops it uses; its median invoke time
    here (a figure, never gated); Micro for int8_io."""

    runs: bool
    message: str = ""
    kernels_agree: bool | None = None   # the reference kernels' outputs pass the recipe's check too
    kernels_diff: float | None = None   # max |XNNPACK - reference| / output range (a figure)
    ops: tuple[tuple[str, int], ...] = ()  # builtin op -> how many, most used first
    flex_ops: tuple[str, ...] = ()
    custom_ops: tuple[str, ...] = ()
    invoke_ms: float | None = None
    micro: MicroCheck | None = None
    quantized_tensors: int | None = None  # tensors of the recipe's quantized type (None: not a quantized recipe)

    @property
    def ok(self) -> bool:
        return self.runs and self.kernels_agree is not False and (self.micro is None or self.micro.ok)

    @property
    def problem(self) -> str:
        if not self.runs:
            return f"does not run on the TFLite runtime without TensorFlow: {self.message}"
        if self.kernels_agree is False:
            return f"passes with XNNPACK but not on the reference kernels: {self.message}"
        if self.micro is not None and not self.micro.ok:
            return f"does not run on TensorFlow Lite Micro: {self.micro.message}"
        return ""

    def describe(self) -> str:
        if not self.ok:
            return self.problem
        ops = ", ".join(f"{n} {k}" for n, k in self.ops[:6]) + (", ..." if len(self.ops) > 6 else "")
        parts = [f"runs without TensorFlow; {sum(k for _, k in self.ops)} ops ({ops})"]
        if self.quantized_tensors == 0:
            parts.append("nothing was quantized (TFLite keeps small tensors in float32): the file is float32's")
        if self.flex_ops or self.custom_ops:
            parts.append(f"Flex/custom ops: {', '.join(self.flex_ops + self.custom_ops)}")
        if self.kernels_agree:
            diff = f" (they differ by {self.kernels_diff:.2g} of the range)" if self.kernels_diff else ""
            parts.append(f"passes on XNNPACK and the reference kernels over 1 input (the first verification input){diff}")
        if self.invoke_ms is not None:
            parts.append(f"invoke {self.invoke_ms:.3g} ms")
        if self.micro is not None:
            parts.append(f"TFLite Micro runs it (arena {self.micro.arena_bytes:,} bytes)" if self.micro.arena_bytes
                         else "TFLite Micro runs it")
        return "; ".join(parts)


def worst(comparisons) -> OutputComparison | None:
    """The output that fails first: a wrong shape, else the largest error."""
    if not comparisons:
        return None
    return max(comparisons, key=lambda c: (not c.shape_ok, c.range_rel_err))
