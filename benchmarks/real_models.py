"""Real third-party architectures for the benchmark, built from their own code with random weights.

    .venv-real/bin/python benchmarks/real_models.py OUT_DIR [--only NAME ...] [--list]

Runs in the benchmark's own environment (benchmarks/requirements_real.txt: torchvision, timm,
transformers, ultralytics, segmentation-models-pytorch), not the project's: torchvision does not
import beside the project's torch. Each model is written as the user would hand it over (a traced
TorchScript file, or a `.pt2` ExportedProgram) with its sidecar, then converted by the project's
environment. Nothing is downloaded: every model is built from its library's code (`weights=None`,
`pretrained=False`, a config object, ultralytics' bundled yaml); the benchmark runs this under
`unshare -n` where it can, so a download would fail loudly.

Random weights make a poor test: with default BatchNorm statistics (mean 0, variance 1) an untrained
network's activations vanish or explode layer by layer, and its output hardly depends on its input
(torchvision's GoogLeNet gives the same logits for any image; a YOLO's outputs move by 1e-7 of their
range). So every model with BatchNorm is *recalibrated* before it is saved: its BatchNorm layers
alone are put in training mode and see a few batches of N(0, 1) inputs (the harness's own sample
distribution), without gradients; then the model is put in eval mode. `check_sensitivity` then
proves that two different inputs give outputs that differ by a real share of their range.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics: no update checks, no downloads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

IMAGE = [1, 3, 224, 224]


@dataclass(frozen=True)
class RealModel:
    name: str
    source: str          # the library and constructor, for the report
    build: Callable[[], nn.Module]
    inputs: tuple        # ((name, shape, dtype, range or None), ...)
    fmt: str = "torchscript"  # or "pt2"
    output_names: tuple[str, ...] = ()
    groups: tuple[str, ...] = ("speed",)  # which benchmark tables it belongs to
    note: str = ""


def _image(name="image", shape=IMAGE):
    return ((name, shape, "float32", None),)


def _tokens(vocab: int, length: int = 128, mask: bool = True):
    ids = ("input_ids", [1, length], "int64", (0, vocab))
    return (ids, ("attention_mask", [1, length], "int64", (1, 2))) if mask else (ids,)


def _torchvision(name: str, **kwargs):
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None, **kwargs)
    return build


def _timm(name: str, **kwargs):
    def build():
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)
    return build


class _TupleOutputs(nn.Module):
    """transformers' models with `torchscript=True` return tuples; keep the first `keep` of them.
    Inputs go by keyword (GPT-2's second positional argument is its cache, not the mask)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...], keep: int = 1, **fixed):
        super().__init__()
        self.model, self.names, self.keep, self.fixed = model, names, keep, fixed

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)), **self.fixed)
        out = out.to_tuple() if hasattr(out, "to_tuple") else out  # a ModelOutput despite torchscript=True
        out = out if isinstance(out, tuple) else (out,)
        return out[0] if self.keep == 1 else tuple(out[: self.keep])


def _transformers(model_class: str, config_class: str, names: tuple[str, ...], keep: int = 1,
                  fixed: dict | None = None, **config):
    def build():
        import transformers

        cfg = getattr(transformers, config_class)(**config)
        cfg.torchscript = True  # tuple outputs: what tracing needs
        return _TupleOutputs(getattr(transformers, model_class)(cfg), names, keep, **(fixed or {}))
    return build


def _yolo(yaml: str):
    def build():
        from ultralytics.nn.tasks import DetectionModel, SegmentationModel

        model = (SegmentationModel if "-seg" in yaml else DetectionModel)(yaml, verbose=False)
        for module in model.modules():
            if hasattr(module, "export") and hasattr(module, "stride"):  # the Detect/Segment head
                module.export = True  # one output tensor (boxes and class scores), as ultralytics exports it
        return model
    return build


# --- the classes onnx2tf's route fails on or gets wrong (built in code, as such models are shipped)

class ActivityBiLSTM(nn.Module):
    """A human-activity classifier over 128 steps of 9 inertial readings (2.56 s at 50 Hz): two
    bidirectional LSTM layers of 64 units, the last step classified into 6 activities."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(9, 64, 2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(128, 6)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


class SpeakerEncoder(nn.Module):
    """A GE2E speaker encoder: 160 frames of 40 mel bands (1.6 s) through three LSTM layers of 256,
    the last layer's final state projected and L2-normalised into a 256-d voice embedding."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)

    def forward(self, mels):
        _, (hidden, _) = self.lstm(mels)
        embedding = torch.relu(self.linear(hidden[-1]))
        return embedding / embedding.norm(dim=1, keepdim=True)


class StreamingVAD(nn.Module):
    """A streaming voice-activity detector: each call takes 512 samples (32 ms at 16 kHz) and the
    LSTM cell's state packed as one tensor [2, 1, 64] (h and c, as Silero's VAD ships its state), and
    returns the speech probability and the next state."""

    def __init__(self):
        super().__init__()
        self.frontend = nn.Sequential(nn.Conv1d(1, 32, 16, stride=8), nn.ReLU(), nn.Conv1d(32, 64, 8, stride=4),
                                      nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.cell = nn.LSTMCell(64, 64)
        self.head = nn.Linear(64, 1)

    def forward(self, chunk, state):
        h, c = self.cell(self.frontend(chunk.unsqueeze(1)).flatten(1), (state[0], state[1]))
        return torch.sigmoid(self.head(h)), torch.stack([h, c])


class SpatialTransformerNet(nn.Module):
    """PyTorch's spatial-transformer tutorial network for 28x28 digits: a localisation network predicts
    an affine transform (initialised to the identity), affine_grid + grid_sample apply it, a small CNN
    classifies the result."""

    def __init__(self):
        super().__init__()
        self.localization = nn.Sequential(nn.Conv2d(1, 8, 7), nn.MaxPool2d(2, 2), nn.ReLU(),
                                          nn.Conv2d(8, 10, 5), nn.MaxPool2d(2, 2), nn.ReLU())
        self.fc_loc = nn.Sequential(nn.Linear(90, 32), nn.ReLU(), nn.Linear(32, 6))
        with torch.no_grad():
            self.fc_loc[2].weight.mul_(0.1)
            self.fc_loc[2].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
        self.features = nn.Sequential(nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
                                      nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10))

    def forward(self, x):
        theta = self.fc_loc(self.localization(x).flatten(1)).view(-1, 2, 3)
        grid = torch.nn.functional.affine_grid(theta, list(x.size()), align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, align_corners=False)
        return torch.log_softmax(self.classifier(self.features(x).flatten(1)), dim=1)


def _unet():
    import segmentation_models_pytorch as smp

    return smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=4)


MODELS: tuple[RealModel, ...] = (
    RealModel("tv_resnet18", "torchvision.models.resnet18(weights=None)", _torchvision("resnet18"), _image(),
              fmt="pt2", output_names=("logits",)),
    RealModel("tv_mobilenet_v3_small", "torchvision.models.mobilenet_v3_small(weights=None)",
              _torchvision("mobilenet_v3_small"), _image()),
    RealModel("tv_convnext_tiny", "torchvision.models.convnext_tiny(weights=None)", _torchvision("convnext_tiny"),
              _image(), note="permute -> LayerNorm -> permute blocks, layer scale, exact GELU"),
    RealModel("tv_efficientnet_b0", "torchvision.models.efficientnet_b0(weights=None)",
              _torchvision("efficientnet_b0"), _image()),
    RealModel("timm_vit_tiny", "timm vit_tiny_patch16_224", _timm("vit_tiny_patch16_224"), _image()),
    RealModel("timm_mobilevit_xxs", "timm mobilevit_xxs (conv/attention hybrid)", _timm("mobilevit_xxs"),
              _image(shape=[1, 3, 256, 256])),
    RealModel("timm_efficientformer_l1", "timm efficientformer_l1 (conv/attention hybrid)",
              _timm("efficientformer_l1"), _image()),
    RealModel("yolov8n", "ultralytics DetectionModel('yolov8n.yaml')", _yolo("yolov8n.yaml"),
              _image(shape=[1, 3, 640, 640]), output_names=("detections",)),
    RealModel("smp_unet_resnet18", "segmentation_models_pytorch.Unet('resnet18', encoder_weights=None)", _unet,
              _image(shape=[1, 3, 256, 256]), output_names=("mask",)),
    RealModel("hf_distilbert", "transformers DistilBertModel(DistilBertConfig())",
              _transformers("DistilBertModel", "DistilBertConfig", ("input_ids", "attention_mask")), _tokens(30522),
              output_names=("last_hidden_state",)),
    RealModel("hf_wav2vec2", "transformers Wav2Vec2Model(Wav2Vec2Config())",
              _transformers("Wav2Vec2Model", "Wav2Vec2Config", ("input_values",)),
              (("input_values", [1, 16000], "float32", None),),
              output_names=("last_hidden_state",)),
    RealModel("hf_gpt2", "transformers GPT2Model(GPT2Config(n_layer=4)), input_ids only",
              _transformers("GPT2Model", "GPT2Config", ("input_ids",), fixed={"use_cache": False}, n_layer=4),
              _tokens(50257, mask=False), output_names=("last_hidden_state",),
              note="aten::diff in its attention-mask code (no mask given: packed-sequence detection)"),
    # float32 classes (issue: TFLite wrong while ONNX is right)
    RealModel("timm_poolformer_s12", "timm poolformer_s12 (MetaFormer, GroupNorm(1, C))", _timm("poolformer_s12"),
              _image(), groups=("speed", "float32")),
    RealModel("timm_mobilevitv2_050", "timm mobilevitv2_050 (separable self-attention, GroupNorm(1, C))",
              _timm("mobilevitv2_050"), _image(shape=[1, 3, 256, 256]), groups=("speed", "float32")),
    RealModel("hf_segformer_b0", "transformers SegformerForSemanticSegmentation(SegformerConfig())",
              _transformers("SegformerForSemanticSegmentation", "SegformerConfig", ("pixel_values",),
                            num_labels=8),
              _image(shape=[1, 3, 256, 256]), output_names=("logits",), groups=("speed", "float32")),
    # the second engine's classes (`benchmark.py --engines`): onnx2tf's route fails on or gets them wrong
    RealModel("har_bilstm", "activity classifier: 2 bidirectional nn.LSTM(9, 64) layers over [1, 128, 9]",
              ActivityBiLSTM, (("window", [1, 128, 9], "float32", None),), output_names=("activity",),
              groups=("engines",)),
    RealModel("ge2e_speaker_encoder", "GE2E speaker encoder: nn.LSTM(40, 256, 3) + Linear + L2 norm over [1, 160, 40]",
              SpeakerEncoder, (("mels", [1, 160, 40], "float32", None),), output_names=("embedding",),
              groups=("engines",)),
    RealModel("streaming_vad", "streaming VAD: conv front end + nn.LSTMCell(64, 64), its state [2, 1, 64] in and out",
              StreamingVAD, (("chunk", [1, 512], "float32", None), ("state", [2, 1, 64], "float32", None)),
              output_names=("speech", "state_next"), groups=("engines",)),
    RealModel("stn_digits", "PyTorch's spatial-transformer tutorial net (affine_grid + grid_sample) over [1, 1, 28, 28]",
              SpatialTransformerNet, _image(shape=[1, 1, 28, 28]), fmt="pt2", output_names=("log_probs",),
              groups=("engines",)),
)
BY_NAME = {m.name: m for m in MODELS}


def _example(spec: RealModel, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _, shape, dtype, rng in spec.inputs:
        if dtype == "int64":
            out.append(torch.randint(rng[0], rng[1], shape, generator=g))
        else:
            out.append(torch.randn(shape, generator=g))
    return tuple(out)


def recalibrate_batchnorm(model: nn.Module, spec: RealModel, batches: int = 6) -> bool:
    """BatchNorm statistics from the model's own activations on N(0, 1) inputs (no gradients,
    nothing else in training mode). Returns whether the model has BatchNorm at all."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch seen
        m.train()
    with torch.no_grad():
        for i in range(batches):
            model(*_example(spec, 1000 + i))
    model.eval()
    return True


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _flat(o)]


def check_sensitivity(model: nn.Module, spec: RealModel) -> float:
    """How much the outputs move between two different inputs, as a share of their range: near 0
    means the model ignores its input and no numeric comparison of it proves anything."""
    with torch.no_grad():
        a, b = _flat(model(*_example(spec, 1))), _flat(model(*_example(spec, 2)))
    shares = []
    for x, y in zip(a, b):
        # a single value (a probability) has no range of its own: the two values' span stands for it
        spread = float(x.max() - x.min()) if x.numel() > 1 else float(abs(x - y).max()) + float(abs(x).max())
        shares.append(float((x - y).abs().max()) / spread if spread > 0 else 0.0)
    return min(shares)


def _toml(spec: RealModel) -> str:
    lines = [f"# {spec.source}: random weights, fixed seed, built by benchmarks/real_models.py"]
    if spec.output_names:
        lines.append("output_names = [" + ", ".join(f'"{n}"' for n in spec.output_names) + "]")
    lines.append("timeout = 3600")
    for name, shape, dtype, rng in spec.inputs:
        lines += ["", "[[inputs]]", f'name = "{name}"', f"shape = {list(shape)}", f'dtype = "{dtype}"']
        if rng is not None:
            lines.append(f"range = [{rng[0]}, {rng[1]}]")
    return "\n".join(lines) + "\n"


def build_one(spec: RealModel, out: Path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = spec.build().eval()
    calibrated = recalibrate_batchnorm(model, spec)
    sensitivity = check_sensitivity(model, spec)
    example = _example(spec, 0)
    path = out / (spec.name + (".pt2" if spec.fmt == "pt2" else ".pt"))
    with torch.no_grad():
        if spec.fmt == "pt2":
            torch.export.save(torch.export.export(model, example), str(path))
        else:
            torch.jit.trace(model, example, check_trace=False, strict=False).save(str(path))
    (out / f"{spec.name}.toml").write_text(_toml(spec))
    params = sum(p.numel() for p in model.parameters())
    return {"name": spec.name, "source": spec.source, "file": path.name, "parameters": params,
            "batchnorm_recalibrated": calibrated, "input_sensitivity": sensitivity, "groups": list(spec.groups),
            "note": spec.note}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=Path("reports/real_models"))
    parser.add_argument("--only", action="append", metavar="NAME", choices=sorted(BY_NAME))
    parser.add_argument("--group", help="only the models of this group (speed, float32, engines)")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MODELS if (not args.only or m.name in args.only) and (not args.group or args.group in m.groups)]
    if args.list:
        for m in chosen:
            print(f"{m.name:<26} {m.source}")
        return 0
    import json
    import warnings

    warnings.filterwarnings("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    built = []
    for spec in chosen:
        info = build_one(spec, args.out)
        built.append(info)
        print(json.dumps(info), flush=True)
    manifest = args.out / "manifest.json"
    old = json.loads(manifest.read_text()) if manifest.is_file() else {}
    old.update({b["name"]: b for b in built})
    manifest.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
