"""What the repair of quantized files does (converter/stages/repair.py), measured.

    .venv/bin/python benchmarks/repair.py [--work DIR] [--out FILE] [--skip-tasks] [--skip-resnet]

Part 1, models trained in code on labelled synthetic data (recipe_defaults.py --tasks builds them: a
classifier of Gaussian clusters, a per-pixel map of bright spots, an embedding of the clusters, a
grid detector of coloured squares): each converted once per quantized recipe, DRQ, int8 calibrated
on its data, and int8 calibrated on the wrong data (its samples scaled by 0.02 or by 30), with no
task declared (what a user who declares nothing gets) and the repair on. Per file: the plain
file's figures and default verdict, the repair's outcome, what is delivered, and, judged with the
model's own task on its 8 held-out samples (converter/tasks.py), whether the plain file and the
delivered one keep every task answer. Its two questions: does a delivered file ever change a task
answer, and is a file that keeps every answer with a cosine of 0.999 or more ever refused?

Part 2, a ResNet-18 written out in plain torch (verify_inputs.py's), random weights with its
BatchNorm recalibrated: what a repair costs against a TFLite conversion. Its DRQ file passes the
default check, so its tolerance is set below its own error (this measures the search, it does not
judge the file). Converted three times, one process each: with its own tolerance (nothing to
repair), below it with the repair off (what the float32 file and the per-layer report cost), and
with it on; the verify stage's seconds beyond the first run's are the repair's cost.

With `--real DIR`, part 3: real architectures that real_models.py built (random weights, BatchNorm
recalibrated), each converted with `deliverables = ["drq", "int8"]` (int8 calibrated on random
samples): which file is delivered, and where a quantized file missed, what the repair did.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import recipe_defaults as rd  # noqa: E402
import verify_inputs  # noqa: E402

from converter.metrics import judge_outputs  # noqa: E402
from converter.protocol import SampleArrays  # noqa: E402
from converter.results import Result  # noqa: E402
from converter.spec import ModelSpec  # noqa: E402
from converter.task_spec import check_task  # noqa: E402
from converter.tflite_run import run_sets, stacked, torch_layout  # noqa: E402

VARIANTS = (("drq", None), ("int8", None), ("int8", 0.02), ("int8", 30.0))


def convert(model: Path, work: Path, *extra: str) -> Result:
    reports = work / "reports"
    subprocess.run([sys.executable, "-m", "converter", str(model), "--no-cache", "--tflite-dir", str(work / "tflite"),
                    "--reports-dir", str(reports), "--engine", "onnx2tf", *extra], cwd=ROOT, capture_output=True)
    return Result.read(reports / "artifacts" / model.stem / "result.json")


def task_verdict(result: Result, artifacts: Path, path: str, recipe: str, task: str):
    """The file judged by the model's task on the held-out samples it was verified on."""
    samples = SampleArrays.load(artifacts / "samples.npz")
    sets = samples.sets
    runs = run_sets(path, result.savedmodel, [inputs for inputs, _ in sets])
    outputs = stacked([torch_layout(r, result.savedmodel.output_perms) for r in runs])
    reference = stacked([list(ref) for _, ref in sets])
    spec = ModelSpec(model_id=result.model_id, path=result.model_path, task=check_task(task))
    names = [name for name, _ in result.savedmodel.output_names]
    (judged,) = judge_outputs(spec, recipe, names, reference, outputs, samples=len(sets))
    return judged


def tasks(work: Path) -> list[dict]:
    models = work / "models"
    models.mkdir(parents=True)
    rows = []
    for name, build, data, loss, shape, task_line in rd.TASK_MODELS:
        torch.manual_seed(0)
        if build is None:
            model = rd.mlp()
            rd.train(model, data)
        else:
            model = build()
            rd.train_task(model, data, loss)
        task = task_line.split('"')[1]
        for recipe, damage in VARIANTS:
            stem = f"{name}_{recipe}" + (f"_x{damage:g}" if damage else "")
            rd.save_with_samples(models, stem, model, data, 1.0 if damage is None else damage)
            (models / f"{stem}.toml").write_text(f'deliverables = ["{recipe}"]\ncalibration = "{stem}_samples"\n'
                                                 f'[[inputs]]\nname = "x"\nshape = {list(shape)}\n')
            result = convert(models / f"{stem}.pt", work)
            artifacts = work / "reports" / "artifacts" / stem
            (file,) = [d for d in result.deliverables if d.recipe == recipe]
            plain_path = str(artifacts / f"model_{recipe}.tflite")
            plain = task_verdict(result, artifacts, plain_path, recipe, task)
            row = {"model": stem, "task": task, "recipe": recipe, "passed": result.passed,
                   "plain_max": plain.range_rel_err, "plain_cosine": plain.cosine,
                   "plain_task_kept": plain.task.flipped == 0, "plain_flips": plain.task.flipped,
                   "plain_units": plain.task.units, "repair": None, "delivered_task_kept": None}
            if file.repair is not None:
                row["repair"] = {"passed": file.repair.passed, "kept_float": len(file.repair.kept_float),
                                 "share": file.repair.quantized_share, "note": file.repair.note}
            if result.passed:
                delivered = task_verdict(result, artifacts, file.path, recipe, task)
                row.update(delivered_task_kept=delivered.task.flipped == 0, delivered_flips=delivered.task.flipped,
                           delivered_max=delivered.range_rel_err, delivered_cosine=delivered.cosine)
            rows.append(row)
            print(_task_line(row), flush=True)
    return rows


def _task_line(r: dict) -> str:
    repair = "-" if r["repair"] is None else (
        f"{r['repair']['kept_float']} float, {r['repair']['share']:.1%} quantized" if r["repair"]["passed"]
        else f"refused: {r['repair']['note'][:60]}")
    delivered = "refused" if not r["passed"] else (
        f"kept every answer (max {r['delivered_max']:.3g}, cos {r['delivered_cosine']:.5f})" if r["delivered_task_kept"]
        else f"CHANGED {r['delivered_flips']} answers")
    return (f"{r['model']:<34}{r['task']:<15}plain max {r['plain_max']:<9.3g}cos {r['plain_cosine']:<9.5f}"
            f"flips {r['plain_flips']}/{r['plain_units']:<6} repair: {repair:<32} delivered: {delivered}")


def resnet(work: Path) -> dict:
    """Three conversions: its own tolerance (nothing to repair), a tolerance below its DRQ error with
    the repair off (the float32 file and the per-layer report only), and with it on."""
    folder = work / "resnet"
    folder.mkdir(parents=True)
    model = verify_inputs.build(folder)
    shape = '[[inputs]]\nname = "image"\nshape = [1, 3, 224, 224]\n'
    model.with_suffix(".toml").write_text(shape)
    runs = {"nothing to repair": convert(model, folder)}
    plain = runs["nothing to repair"].deliverable_of("drq").worst.range_rel_err
    tight = round(plain * 0.8, 5)  # below its own error: the plain file misses, the search runs
    for label, repair in (("report only", "false"), ("repaired", "true")):
        model.with_suffix(".toml").write_text(f"repair = {repair}\n{shape}[tolerance]\ndrq = {tight}\n")
        runs[label] = convert(model, folder)
    figures = {"plain_error": plain, "tolerance": tight, "runs": {}}
    base = runs["nothing to repair"].stage_seconds
    print(f"ResNet-18 DRQ, plain error {plain:.4g}; tolerance set to {tight} for the last two runs; one TFLite "
          f"conversion (DRQ) took {base['tflite']:.1f} s")
    for label, result in runs.items():
        d = result.deliverable_of("drq")
        extra = result.stage_seconds["verify"] - base["verify"]
        figures["runs"][label] = {"stages": result.stage_seconds, "passed": result.passed, "extra_verify": extra,
                                  "error": d.worst.range_rel_err,
                                  "repair": None if d.repair is None else dataclasses.asdict(d.repair)}
        outcome = "" if d.repair is None else (
            f"; {len(d.repair.kept_float)} layer(s) kept in float32, {d.repair.quantized_share:.1%} quantized, "
            f"{d.repair.rebuilds} rebuild(s), error {d.worst.range_rel_err:.4g}")
        print(f"  {label:<18} verify stage {result.stage_seconds['verify']:5.1f} s, {extra:+5.1f} s "
              f"= {extra / base['tflite']:.2f} conversions{outcome}")
    return figures


def _repaired(repair: dict | None) -> str:
    if repair is None:
        return ""
    if repair["passed"]:
        return f" (repaired: {len(repair['kept_float'])} layer(s) in float32, {repair['quantized_share']:.1%} quantized)"
    return f" (not repaired: {repair['note'][:100]})"


def real(models: Path, work: Path) -> list[dict]:
    """Real architectures (built by real_models.py in their own environment), each converted with
    `deliverables = ["drq", "int8"]` (int8 calibrated on random samples: no data ships with them)."""
    rows = []
    for model in sorted([*models.glob("*.pt"), *models.glob("*.pt2")]):
        sidecar = model.with_suffix(".toml")
        text = sidecar.read_text()
        if not text.startswith("deliverables"):
            sidecar.write_text('deliverables = ["drq", "int8"]\n' + text)
        result = convert(model, work, "--conversion-timeout", "1800")
        row = {"model": model.stem, "passed": result.passed, "delivered": result.delivered,
               "failure": result.failure.line() if result.failure else None, "seconds": result.seconds,
               "tf_exact": bool(result.savedmodel and all(c.passed for c in result.savedmodel.outputs)),
               "files": {}}
        for d in result.deliverables:
            row["files"][d.recipe] = {"error": d.worst.range_rel_err if d.worst else None, "passed": d.passed,
                                      "cosine": min((c.cosine for c in d.outputs), default=None),
                                      "repair": None if d.repair is None else dataclasses.asdict(d.repair),
                                      "worst_layers": [e.describe() for e in d.layers[:3]]}
        rows.append(row)
        files = "; ".join(f"{r} {f['error']:.3g}{' ok' if f['passed'] else ''}{_repaired(f['repair'])}"
                          for r, f in row["files"].items() if f["error"] is not None)
        print(f"{model.stem:<26}{'PASS ' + str(result.delivered) if result.passed else 'FAIL':<14}"
              f"{result.seconds:6.0f} s  {files or row['failure']}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "reports" / "repair_bench")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "repair_bench.json")
    parser.add_argument("--skip-tasks", action="store_true")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--real", type=Path, help="also a folder of real architectures built by real_models.py")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    figures = {}
    if not args.skip_tasks:
        rows = figures["tasks"] = tasks(args.work)
        changed = [r["model"] for r in rows if r["passed"] and not r["delivered_task_kept"]]
        wrongly = [r["model"] for r in rows if not r["passed"] and r["plain_task_kept"] and r["plain_cosine"] >= 0.999]
        print(f"\ndelivered files that changed a task answer: {len(changed)} {changed}")
        print(f"refused files that kept every task answer with cosine >= 0.999: {len(wrongly)} {wrongly}")
    if not args.skip_resnet:
        figures["resnet18"] = resnet(args.work)
    if args.real:
        figures["real"] = real(args.real, args.work / "real")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
