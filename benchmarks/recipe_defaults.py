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

    .venv/bin/python benchmarks/recipe_defaults.py --tasks [--work DIR] [--out FILE]

measures what the verdict of a declared task (converter/tasks.py) and the default check of an
output that declares none say of the same files: four models trained in code on labelled
synthetic data, one per task (a classifier of Gaussian clusters, a dense per-pixel map of bright
spots, an embedding of the clusters, a small grid detector of coloured squares), each converted with
fp16, DRQ and int8 calibrated on its data, and twice more with int8 calibrated on the wrong data
(its calibration samples scaled by 0.02, so that most activations clip, or by 30, so that the int8
grid is too coarse for them), which may break what the model does.
Per file it prints the task's figures (decisions that agree, clear flips, near ties, the worst
embedding cosine) beside the tensor figures (max error, elements beyond the tolerance, the worst
channel's error along axis 1 against its own range, cosine) and both verdicts: the task's, and the
default check's (what the same file would get if the output declared no task).
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


def save_with_samples(folder: Path, name: str, model, data, calibration_scale: float = 1.0) -> None:
    """The traced model and SAMPLES samples of its data (the last fifth held out for verification,
    the rest, scaled by `calibration_scale`, for calibration)."""
    torch.manual_seed(0)
    example = torch.from_numpy(data(np.random.default_rng(1), 1)[0])
    torch.jit.save(torch.jit.trace(model, example), str(folder / f"{name}.pt"))
    samples = folder / f"{name}_samples"
    samples.mkdir()
    x, _ = data(np.random.default_rng(2), SAMPLES)
    for i in range(SAMPLES):
        scale = calibration_scale if i < SAMPLES - SAMPLES // 5 else 1.0
        np.save(samples / f"{i:03d}.npy", x[i:i + 1] * scale)


def write(folder: Path, name: str, model, data, shape):
    save_with_samples(folder, name, model, data)
    (folder / f"{name}.toml").write_text(
        f'deliverables = {json.dumps(list(RECIPES))}\ncalibration = "{name}_samples"\n'
        f'[[inputs]]\nname = "x"\nshape = {list(shape)}\n'
        # generous tolerances: this measures errors, it does not judge them
        '[tolerance]\nfp16 = 10.0\ndrq = 10.0\nint8 = 10.0\nint8_io = 10.0\n')


# --- tasks: one small model per task, trained on labelled synthetic data -------------------------------

def spots(rng, n, size=24):
    """Noise images with 1 to 3 bright squares, and each pixel's label: inside a square or not."""
    images = rng.standard_normal((n, 1, size, size)).astype(np.float32) * 0.3
    labels = np.zeros((n, size, size), np.int64)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            side = int(rng.integers(3, 7))
            y, x = rng.integers(0, size - side, 2)
            images[i, 0, y:y + side, x:x + side] += 1.5
            labels[i, y:y + side, x:x + side] = 1
    return images, labels


def squares(rng, n, size=24, stride=4):
    """Noise images with one square whose colour (channel 0 or 1) is its class, and its target:
    the grid cell holding its centre, its class and its box (cx, cy, w, h in pixels)."""
    images = rng.standard_normal((n, 3, size, size)).astype(np.float32) * 0.3
    targets = np.zeros((n, 4), np.float32)
    classes = rng.integers(0, 2, n)
    for i in range(n):
        side = int(rng.integers(5, 10))
        y, x = rng.integers(0, size - side, 2)
        images[i, classes[i], y:y + side, x:x + side] += 2.0
        targets[i] = (x + side / 2, y + side / 2, side, side)
    return images, (classes, targets)


class SpotMap(nn.Module):
    """A dense map: per pixel, two logits (background, spot)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 2, 1))

    def forward(self, x):
        return self.net(x)


class Embedder(nn.Module):
    """The clusters' MLP trained as a classifier; its 16-d penultimate layer is the embedding."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 16))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.trunk(x)


class GridDetector(nn.Module):
    """A detector's raw head in miniature (YOLO's layout): per cell of a 6 x 6 grid, a box (cx, cy, w,
    h in pixels) and two class scores, as [N, 4 + 2, 36]."""

    def __init__(self, stride=4):
        super().__init__()
        self.stride = stride
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 6, 1))

    def forward(self, x):
        raw = self.body(x)
        n, _, h, w = raw.shape
        gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        cx = (gx + torch.sigmoid(raw[:, 0])) * self.stride
        cy = (gy + torch.sigmoid(raw[:, 1])) * self.stride
        wh = torch.exp(raw[:, 2:4].clamp(-4, 4)) * self.stride
        out = torch.cat([cx[:, None], cy[:, None], wh, torch.sigmoid(raw[:, 4:6])], dim=1)
        return out.reshape(n, 6, h * w)


def train_task(model, data, loss_of, steps=250, lr=3e-3):
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(steps):
        x, y = data(rng, 64)
        loss = loss_of(model, torch.from_numpy(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def _dense_loss(model, x, y):
    return nn.functional.cross_entropy(model(x), torch.from_numpy(y))


def _embedding_loss(model, x, y):
    return nn.functional.cross_entropy(model.head(model.trunk(x)), torch.from_numpy(y))


def _detector_loss(model, x, y):
    classes, boxes = y
    out = model(x)  # [N, 6, 36]
    cells = (np.floor(boxes[:, 1] / 4) * 6 + np.floor(boxes[:, 0] / 4)).astype(np.int64)
    target = torch.zeros(out.shape[0], 2, 36)
    target[np.arange(len(cells)), torch.from_numpy(classes), torch.from_numpy(cells)] = 1.0
    scores = nn.functional.binary_cross_entropy(out[:, 4:].clamp(1e-6, 1 - 1e-6), target)
    picked = out[np.arange(len(cells)), :4, torch.from_numpy(cells)]
    return scores * 10 + nn.functional.smooth_l1_loss(picked / 4, torch.from_numpy(boxes) / 4)


def held_out(name: str, model, data) -> str:
    """How well a task model does its task on 256 fresh samples of its data."""
    x, y = data(np.random.default_rng(99), 256)
    with torch.no_grad():
        if name.startswith("dense"):
            return f"pixel accuracy {(model(torch.from_numpy(x)).argmax(1).numpy() == y).mean():.2%}"
        if name.startswith("embed"):
            return f"accuracy through its head {(model.head(model(torch.from_numpy(x))).argmax(1).numpy() == y).mean():.1%}"
        out = model(torch.from_numpy(x)).numpy()  # the detector: its best anchor per image
        best = out[:, 4:].max(axis=1).argmax(axis=1)
        picked = out[np.arange(len(x)), :, best]
        return (f"class accuracy {(picked[:, 4:].argmax(axis=1) == y[0]).mean():.1%}, mean box error "
                f"{np.abs(picked[:, :4] - y[1]).mean():.2f} px")


# name, model, data, loss, input shape, the sidecar's task
TASK_MODELS = (
    ("classify_clusters", None, blobs, None, (1, 32), 'task = "classification"'),
    ("dense_spots", SpotMap, spots, _dense_loss, (1, 1, 24, 24), 'task = "dense"'),
    ("embed_clusters", Embedder, blobs, _embedding_loss, (1, 32), 'task = "embedding"'),
    ("detect_squares", GridDetector, squares, _detector_loss, (1, 3, 24, 24), 'task = "detection"'),
)
# the wrong calibration data: the real samples scaled down (most activations clip at the int8 grid's
# ends) or up (the grid is so coarse that small activations round to zero)
DAMAGE = (0.02, 30.0)


def write_task(folder: Path, name: str, model, data, shape, task: str, damage: float | None = None):
    """The model, its sidecar (its task) and 40 samples of its data, the last 8 held out; with
    `damage`: int8 alone, calibrated on the first 32 scaled by it, verified on the same 8 real
    held-out samples."""
    save_with_samples(folder, name, model, data, 1.0 if damage is None else damage)
    recipes = ["int8"] if damage is not None else ["fp16", "drq", "int8"]
    (folder / f"{name}.toml").write_text(
        f'deliverables = {json.dumps(recipes)}\ncalibration = "{name}_samples"\n{task}\n'
        f'[[inputs]]\nname = "x"\nshape = {list(shape)}\n')


def task_figures(models: Path, work: Path) -> dict:
    figures = {}
    for model in sorted(models.glob("*.pt")):
        reports = work / "reports"
        subprocess.run([sys.executable, "-m", "converter", str(model), "--no-cache", "--tflite-dir",
                        str(work / "tflite"), "--reports-dir", str(reports)], cwd=ROOT, capture_output=True)
        result = Result.from_dict(json.loads((reports / "artifacts" / model.stem / "result.json").read_text()))
        figures[model.stem] = {}
        for d in result.deliverables:
            if not d.verified:
                figures[model.stem][d.recipe] = {"failure": d.runtime.message if d.runtime else "not verified"}
                continue
            (c,) = d.outputs
            t = c.task
            figures[model.stem][d.recipe] = {
                "max": c.range_rel_err, "tolerance": c.tolerance, "off": c.mismatched, "elements": c.elements,
                "outliers": c.outliers, "cosine": c.cosine, "samples": c.samples, "tensor_passed": c.tensor_passed,
                "channel_err": c.channel_err, "channel_off": c.channel_off,
                "task": t.task, "units": t.units, "agree": t.agree, "near_ties": t.near_ties, "flipped": t.flipped,
                "allowed": t.allowed, "min_cosine": t.min_cosine, "detected": t.detected, "task_passed": t.passed}
    return figures


def print_tasks(figures: dict, accuracy: dict) -> None:
    print(f"{'model':<30}{'recipe':<7}{'max err':>9}{'tol':>6}{'off/elements':>15}{'channel':>9}{'cosine':>9}"
          f"{'default':>8}  {'task: agree/units, clear flips (allowed), near ties':<48}{'task':>6}")
    for model, recipes in figures.items():
        tag = f" (held-out {accuracy[model]})" if model in accuracy else ""
        print(f"{model}{tag}")
        for recipe, f in recipes.items():
            if "failure" in f:
                print(f"{'':<30}{recipe:<7}does not run: {f['failure']}")
                continue
            extra = f", worst cosine {f['min_cosine']:.4f}" if f["min_cosine"] is not None else ""
            extra += f", {f['detected']} detections" if f["detected"] is not None else ""
            task = f"{f['agree']}/{f['units']}, {f['flipped']} ({f['allowed']}), {f['near_ties']}{extra}"
            channel = "-" if f["channel_err"] is None else f"{f['channel_err']:.3g}"
            print(f"{'':<30}{recipe:<7}{f['max']:>9.3g}{f['tolerance']:>6.2g}{f['off']:>8}/{f['elements']:<6}"
                  f"{channel:>9}{f['cosine']:>9.5f}{'pass' if f['tensor_passed'] else 'FAIL':>8}  {task:<48}"
                  f"{'pass' if f['task_passed'] else 'FAIL':>6}")


def main_tasks(args) -> int:
    shutil.rmtree(args.work, ignore_errors=True)
    models = args.work / "models"
    models.mkdir(parents=True)
    accuracy = {}
    for name, build, data, loss, shape, task in TASK_MODELS:
        torch.manual_seed(0)
        if build is None:  # the clusters' classifier, trained as the tolerance figures' MLP is
            model = mlp()
            accuracy[name] = f"accuracy {train(model, data):.1%}"
        else:
            model = build()
            train_task(model, data, loss)
            accuracy[name] = held_out(name, model, data)
        write_task(models, name, model, data, shape, task)
        for damage in DAMAGE:
            write_task(models, f"{name}_calibrated_x{damage:g}", model, data, shape, task, damage)
    figures = task_figures(models, args.work)
    print_tasks(figures, accuracy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"accuracy": accuracy, "figures": figures}, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "reports" / "recipe_defaults")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "recipe_defaults.json")
    parser.add_argument("--tasks", action="store_true", help="the task verdicts against the default check")
    args = parser.parse_args()
    if args.tasks:
        return main_tasks(args)
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
