"""Write the benchmark models (from code, fixed seeds) with their sidecars into a folder.

    .venv/bin/python benchmarks/models.py OUT_DIR

They are not committed (about 250 MB): the benchmark builds them on each run, into its own folder.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_size as arch  # noqa: E402

IMAGE_TOML = '[[inputs]]\nname = "image"\nshape = [1, 3, 224, 224]\n'
BERT_TOML = """output_names = ["last_hidden_state", "pooler_output"]

[[inputs]]
name = "input_ids"
shape = [1, 128]
dtype = "int64"
range = [0, 30522]

[[inputs]]
name = "attention_mask"
shape = [1, 128]
dtype = "int64"
range = [0, 2]
"""


def _settle(model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, then inference mode."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(example * 1.5 + 0.3)
    return model.eval()


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    written = []

    def save(name: str, toml: str | None, saver) -> None:
        path = out / name
        saver(path)  # always: a file left from older code would be measured as this one
        if toml is not None:
            path.with_suffix(".toml").write_text(toml)
        written.append(path)

    torch.manual_seed(18)
    resnet = _settle(arch.ResNet18(), image)
    save("resnet18.pt2", 'output_names = ["logits"]\n',
         lambda p: torch.export.save(torch.export.export(resnet, (image,)), str(p)))

    torch.manual_seed(3)
    mobilenet = _settle(arch.MobileNetV3Small(), image)
    save("mobilenet_v3_small.pt", IMAGE_TOML, lambda p: torch.jit.trace(mobilenet, image).save(str(p)))

    torch.manual_seed(28)
    convnext = arch.ConvNeXtTiny().eval()
    save("convnext_tiny.pt", IMAGE_TOML, lambda p: torch.jit.trace(convnext, image).save(str(p)))

    torch.manual_seed(4)
    # BERT-mini's shape: 4 layers of width 256, a 30522-token vocabulary (11 M parameters)
    bert = arch.BertStyleEncoder(vocab=30522, dim=256, heads=4, layers=4, length=128).eval()
    ids = torch.randint(0, 30522, (1, 128), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 128, dtype=torch.int64)
    save("bert_mini.pt", BERT_TOML, lambda p: torch.jit.trace(bert, (ids, mask)).save(str(p)))
    return written


if __name__ == "__main__":
    for path in build(Path(sys.argv[1] if len(sys.argv) > 1 else "reports/benchmark_models")):
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MB")
