"""What each recipe's default check should be, measured: small models trained in code, and their
untrained twins, converted with every recipe, with real calibration samples held out for
verification.

    .venv/bin/python benchmarks/recipe_defaults.py [--work DIR] [--out FILE]

Per model and recipe it prints the range-relative max error (the harness's check), its 99th
percentile, the cosine and the top-1 agreement against PyTorch on the held-out samples. Trained
weights and random ones behave differently under quantization (a trained network's activations
have structure that calibration captures; a random one's ranges are whatever N(0, 1) gives), so
a default set on random weights alone would mislead. Figures only; the defaults in
converter/recipes.py and the README cite what this printed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "model_cases" / "examples"))

import architectures as arch  # noqa: E402

from converter.recipes import RECIPES  # noqa: E402
from converter.results import Result  # noqa: E402

SAMPLES = 40  # calibration samples written per model (the last fifth held out)


def blobs(rng, n, classes=10, dim=32):
    centres = np.random.default_rng(123).standard_normal((classes, dim)) * 2.0
    labels = rng.integers(0, classes, n)
    return (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32), labels


def bars(rng, n):
    """Images of one bar on noise (the bundled int8 example's data), with their labels."""
    images, labels = arch.bar_images(torch.Generator().manual_seed(int(rng.integers(2**31))), n)
    return images.numpy(), labels.numpy()


def mlp():
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(arch.BarClassifier())


def train(model, data, steps=300):
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(model.parameters(), 1e-2 if isinstance(model[0], nn.Linear) else 3e-3)
    model.train()
    for _ in range(steps):
        x, y = data(rng, 64)
        loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    x, y = data(np.random.default_rng(99), 512)
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def recalibrate(model, data):
    """An untrained model's BatchNorm statistics set on its own data (else its output ignores the input)."""
    model.train()
    with torch.no_grad():
        for _ in range(20):
            model(torch.from_numpy(data(np.random.default_rng(5), 64)[0]))
    model.eval()


def write(folder: Path, name: str, model, data, shape):
    torch.manual_seed(0)
    example = torch.from_numpy(data(np.random.default_rng(1), 1)[0])
    torch.jit.save(torch.jit.trace(model, example), str(folder / f"{name}.pt"))
    samples = folder / f"{name}_samples"
    samples.mkdir()
    x, _ = data(np.random.default_rng(2), SAMPLES)
    for i in range(SAMPLES):
        np.save(samples / f"{i:03d}.npy", x[i:i + 1])
    (folder / f"{name}.toml").write_text(
        f'deliverables = {json.dumps(list(RECIPES))}\ncalibration = "{name}_samples"\n'
        f'[[inputs]]\nname = "x"\nshape = {list(shape)}\n'
        # generous tolerances: this measures errors, it does not judge them
        '[tolerance]\nfp16 = 10.0\ndrq = 10.0\nint8 = 10.0\nint8_io = 10.0\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "reports" / "recipe_defaults")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "recipe_defaults.json")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    models = args.work / "models"
    models.mkdir(parents=True)
    accuracy = {}
    for name, build, data, shape in (("mlp", mlp, blobs, (1, 32)), ("cnn", cnn, bars, (1, 3, 24, 24))):
        torch.manual_seed(0)
        trained = build()
        accuracy[f"{name}_trained"] = train(trained, data)
        write(models, f"{name}_trained", trained, data, shape)
        torch.manual_seed(1)
        untrained = build()
        recalibrate(untrained, data)
        write(models, f"{name}_random", untrained, data, shape)
    figures = {}
    for model in sorted(models.glob("*.pt")):
        reports = args.work / "reports"
        subprocess.run([sys.executable, "-m", "converter", str(model), "--no-cache", "--tflite-dir",
                        str(args.work / "tflite"), "--reports-dir", str(reports)], cwd=ROOT, capture_output=True)
        result = Result.from_dict(json.loads((reports / "artifacts" / model.stem / "result.json").read_text()))
        figures[model.stem] = {d.recipe: {"max": d.worst.range_rel_err, "p99": max(c.p99_rel_err for c in d.outputs),
                                          "cosine": min(c.cosine for c in d.outputs),
                                          "top1": d.outputs[0].top1_agreement, "bytes": d.bytes,
                                          "samples": d.outputs[0].samples}
                               for d in result.deliverables if d.verified}
        if result.failure:
            figures[model.stem]["failure"] = result.failure.message
    print(f"{'model':<14}{'recipe':<9}{'max err':>9}{'p99':>9}{'cosine':>10}{'top-1':>7}  (held-out samples)")
    for model, recipes in figures.items():
        tag = f" (trained, test accuracy {accuracy[model]:.1%})" if model in accuracy else ""
        print(f"{model}{tag}")
        for recipe, f in recipes.items():
            if recipe == "failure":
                print(f"  FAILED: {f}")
                continue
            top1 = "-" if f["top1"] is None else f"{f['top1']:.0%}"
            print(f"{'':<14}{recipe:<9}{f['max']:>9.3g}{f['p99']:>9.3g}{f['cosine']:>10.5f}{top1:>7}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"accuracy": accuracy, "figures": figures}, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
