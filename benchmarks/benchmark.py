"""Speed and memory of the harness against the workflow it replaces, on real architectures, in one run.

    .venv/bin/python benchmarks/benchmark.py --build-real [--only MODEL ...] [--ingredients] [--skip-batch]
    .venv/bin/python benchmarks/benchmark.py --models DIR [--only MODEL ...]

The models are real third-party architectures (torchvision, timm, ultralytics, transformers,
segmentation-models-pytorch; random weights, fixed seeds, BatchNorm recalibrated), built by
benchmarks/real_models.py in an environment of their own (benchmarks/requirements_real.txt,
`--real-python`, default .venv-real/bin/python; `--build-real` builds them, offline) and converted
by this project's environment. `--models DIR` measures any folder of models instead.

Per model, each in a process of its own and sampled the same way (peak resident memory of the
whole process tree every 0.1 s):
- the original workflow (benchmarks/original_workflow.py): export at opset 17, onnx2tf's default
  run, `from_saved_model` + `Optimize.DEFAULT`;
- the harness as a user runs one model, `python -m converter MODEL`: wall, peak memory, the
  onnx2tf runs and modes, the fixes, the stage split.
Then the share of models onnx2tf converted in one run, the harness's total time against the
original's over the models both converted, and the targets beside. `--ingredients` adds, per
model, what each ingredient of the onnx2tf stage costs (benchmarks/ingredients.py); `--recipes`
converts each model with each recipe alone (fp32, drq, fp16, int8: sizes, the tflite and verify
stages, errors, invoke times; targets for ResNet-18: int8 at most 0.27x float32's size, its
calibration and conversion at most 15 s, fp16's at most 5 s). `--engines` converts each model
with each engine alone (onnx2tf, litert; the litert one in its own environment, `.venv-litert`)
and with auto, printing per model and engine the wall time, peak memory, stages and the float32
and DRQ files' errors (`--group engines` of real_models.py: the classes onnx2tf fails on). `--skip-models` skips the
original-against-harness runs. Unless
`--skip-batch`: the harness's fixed cost per model, and the bundled examples as a batch
(`pytest -n N model_cases` under -n 1, 2, 4, and warm from the cache).
Figures only: nothing here passes or fails (machines are noisy). Writes reports/benchmark.json.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converter import forkserver  # noqa: E402
from converter.discovery import discover  # noqa: E402
from converter.environment import tool_versions  # noqa: E402
from converter.isolation import tree_rss  # noqa: E402
from converter.runner import convert_case  # noqa: E402
from converter.settings import resolve  # noqa: E402

STAGES = ("load", "export", "savedmodel", "tflite", "verify")
# per model: harness / original, through the one-model CLI
TARGETS = {"tv_resnet18": {"wall": 0.10, "rss": 0.35}, "tv_convnext_tiny": {"wall": 0.6, "rss": 0.8}}
ONE_RUN_TARGET = 0.8       # share of models onnx2tf converts in one run
TOTAL_TIME_TARGET = 0.25   # harness / original over the models both convert
SMALLEST_EXAMPLE = "two_in_two_out"
REAL_BUILDER = ROOT / "benchmarks" / "real_models.py"


class PeakMemory:
    """Samples the resident memory of a process tree every 0.1 s, from outside, identically for
    the original workflow and the harness."""

    def __init__(self):
        self.pid, self.peak, self._stop = None, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        self.pid = pid

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.pid is not None:
                try:
                    self.peak = max(self.peak, tree_rss(psutil.Process(self.pid)))
                except psutil.Error:
                    pass
            time.sleep(0.1)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "system": platform.platform(), "tools": tool_versions(),
            # set, every run compiles every module again: 0.9 s of a warm batch rerun's 2.5 s here
            "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))}


def build_real(python: Path, out: Path, only: list[str] | None) -> None:
    """The real models, built in their own environment (offline: no network namespace, where
    `unshare -n` is allowed), rebuilt only when real_models.py changed."""
    stamp = out / ".builder.sha256"
    digest = hashlib.sha256(REAL_BUILDER.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and not only:
        print(f"real models: {out} (built by this real_models.py already)")
        return
    if not python.is_file():
        raise SystemExit(f"benchmark: no environment to build the real models in at {python}: create it with "
                         f"python3 -m venv .venv-real && .venv-real/bin/pip install -r benchmarks/requirements_real.txt "
                         "(or pass --real-python)")
    command = [str(python), str(REAL_BUILDER), str(out)] + [f"--only={m}" for m in only or []]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n"] + command
    print("building real models:", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if not only:
        stamp.write_text(digest)


def shapes_of(case) -> list[str]:
    return [",".join(map(str, i.shape)) + (":int64" if "int" in i.dtype else "") for i in case.spec.inputs]


def _measured(command: list[str], log: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    memory = PeakMemory()
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))
        memory.watch(proc.pid)
        stdout, _ = proc.communicate()
    wall, peak = time.perf_counter() - start, memory.stop()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, ""), wall, peak


def run_original(case, work: Path) -> dict:
    out = work / "original" / case.model_id
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    proc, wall, peak = _measured([sys.executable, str(ROOT / "benchmarks" / "original_workflow.py"), str(case.path),
                                  str(out), *shapes_of(case)], out / "log.txt")
    row = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak), "ok": proc.returncode == 0}
    if proc.returncode == 0:
        return {**row, **json.loads(proc.stdout.strip().splitlines()[-1])}
    (out / "stdout.txt").write_text(proc.stdout)  # onnx2tf prints its errors there, then exits 1
    return {**row, "failure": _why(proc.stdout + (out / "log.txt").read_text(errors="replace"), proc.returncode)}


def _why(log: str, status: int) -> str:
    """The cause a user of the original workflow would find in its output."""
    flex = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", log)))
    if flex:
        return f"TFLite builtins lack {', '.join(flex)} (the original workflow has no fix for it)"
    errors = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in log.splitlines()
              if "error" in ln.lower() and not ln.startswith(("W0000", "E0000"))]
    return (errors[-1] if errors else f"exit status {status}")[:300]


def run_cli(case, work: Path, deliverables: str | None = None, engine: str | None = None) -> dict:
    """`python -m converter MODEL`, as a user runs one model (a spawned child), without the cache."""
    out = work / "harness" / (case.model_id + (f"-{deliverables}" if deliverables else "") + (f"-{engine}" if engine else ""))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    recipes = ["--deliverables", deliverables] if deliverables else []
    recipes += ["--engine", engine] if engine else []
    proc, wall, peak = _measured([sys.executable, "-m", "converter", str(case.path), "--no-cache", *recipes,
                                  "--tflite-dir", str(out / "tflite"), "--reports-dir", str(out / "reports")],
                                 out / "log.txt")
    from converter.results import Result
    from converter.settings import file_name

    result = Result.read(out / "reports" / "artifacts" / file_name(case.model_id) / "result.json")
    saved = result.savedmodel
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak), "ok": result.passed,
            "engine": result.engine, "onnx2tf_runs": result.onnx2tf_runs,
            "onnx2tf_mode": saved.onnx2tf_mode if saved else None,
            "fixes": [f.label for f in result.fixes], "stages_s": result.stage_seconds,
            "tf_err": result.tf_error,
            "recipes": {d.recipe: {"bytes": d.bytes, "err": d.worst.range_rel_err if d.verified else None,
                                   "invoke_ms": d.runtime.invoke_ms if d.runtime else None}
                        for d in result.deliverables},
            "failure": None if result.passed else f"{result.failure.kind.value}: {result.failure.message}"}


RECIPE_RUNS = ("fp32", "drq", "fp16", "int8")
RECIPE_TARGETS = {"int8_size_over_fp32": 0.27, "int8_tflite_s": 15.0, "fp16_tflite_s": 5.0}


def measure_recipes(cases, work: Path, report: dict) -> None:
    """Each recipe alone through the CLI: its tflite stage (conversion, calibration for int8), its
    verify stage (runtime checks included), its file against float32's."""
    print(f"\n{'model':<26}{'recipe':<8}{'wall s':>8}{'tflite s':>9}{'verify s':>9}{'bytes':>11}{'x fp32':>8}{'err':>10}"
          f"{'invoke ms':>10}")
    for case in cases:
        runs = {r: run_cli(case, work, r) for r in RECIPE_RUNS}
        fp32 = runs["fp32"]["recipes"].get("fp32", {}).get("bytes")
        for recipe, run in runs.items():
            figures = run["recipes"].get(recipe, {})
            size = figures.get("bytes")
            print(f"{case.model_id:<26}{recipe:<8}{run['wall_s']:>8.1f}{run['stages_s'].get('tflite', 0):>9.1f}"
                  f"{run['stages_s'].get('verify', 0):>9.1f}{size or 0:>11}{(size / fp32 if size and fp32 else 0):>8.3f}"
                  f"{figures.get('err') or 0:>10.3g}{figures.get('invoke_ms') or 0:>10.3g}"
                  + ("" if run["ok"] else f"  FAILED: {(run['failure'] or '')[:120]}"))
        report.setdefault("recipes", {})[case.model_id] = runs
        int8 = runs["int8"]["recipes"].get("int8", {}).get("bytes")
        if int8 and fp32:
            print(f"  int8 / fp32 size {int8 / fp32:.3f} (target <= {RECIPE_TARGETS['int8_size_over_fp32']}); "
                  f"int8 tflite stage {runs['int8']['stages_s'].get('tflite', 0):.1f} s (target <= "
                  f"{RECIPE_TARGETS['int8_tflite_s']:.0f}); fp16 tflite stage {runs['fp16']['stages_s'].get('tflite', 0):.1f} s "
                  f"(target <= {RECIPE_TARGETS['fp16_tflite_s']:.0f})")


ENGINE_RUNS = ("onnx2tf", "litert", "auto")


def measure_engines(cases, work: Path, report: dict) -> None:
    """Each model through each engine alone, then auto, as a user runs one model: wall time and peak
    memory of the whole process tree, where the time went, and the float32 and DRQ files' errors."""
    from converter.engines import missing
    from converter.settings import LITERT_PYTHON

    if missing(LITERT_PYTHON):
        raise SystemExit(f"benchmark: --engines needs the litert engine's environment: {missing(LITERT_PYTHON)}")
    print(f"\n{'model':<24}{'engine':<9}{'wall s':>8}{'MB':>7}  {'made by':<9}" + " ".join(f"{s:>7}" for s in STAGES)
          + f"{'fp32 err':>10}{'drq err':>10}")
    for case in cases:
        runs = {e: run_cli(case, work, "fp32,drq", engine=e) for e in ENGINE_RUNS}
        report.setdefault("engines", {})[case.model_id] = runs
        for engine, run in runs.items():
            errors = [run["recipes"].get(r, {}).get("err") for r in ("fp32", "drq")]
            print(f"{case.model_id:<24}{engine:<9}{run['wall_s']:>8.1f}{run['peak_rss_mb']:>7.0f}  "
                  f"{(run['engine'] if run['ok'] else '-'):<9}" + " ".join(f"{run['stages_s'].get(s, 0):>7.1f}" for s in STAGES)
                  + "".join(f"{e:>10.2g}" if e is not None else f"{'-':>10}" for e in errors)
                  + ("" if run["ok"] else f"  FAILED: {(run['failure'] or '')[:150]}"), flush=True)


def run_ingredients(case, work: Path) -> list[dict]:
    out = work / "ingredients" / case.model_id
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ingredients.py"), str(case.path), str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    shutil.rmtree(out, ignore_errors=True)  # SavedModels of every way: gigabytes for large models
    return rows or [{"way": "ingredients", "error": proc.stderr.strip().splitlines()[-1:] or f"exit {proc.returncode}"}]


def run_forked(case, settings) -> dict:
    memory, parents = PeakMemory(), []

    def started(pid: int) -> None:
        memory.watch(pid)
        with contextlib.suppress(psutil.Error):  # was it forked from the preloaded process, as labelled?
            parents.append(" ".join(psutil.Process(pid).parent().cmdline()))

    start = time.perf_counter()
    result = convert_case(case, settings, on_start=started)
    wall, peak = time.perf_counter() - start, memory.stop()
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak), "ok": result.passed,
            "forked": any("converter.stages.forkserver" in p for p in parents),
            "stages_s": result.stage_seconds, "overhead_s": round(wall - sum(result.stage_seconds.values()), 2)}


def pytest_batch(work: Path, workers: int, *, cache: Path | None) -> dict:
    name = f"n{workers}" + ("-cache" if cache else "")
    args = [sys.executable, "-m", "pytest", "model_cases", "-p", "no:cacheprovider", "-n", str(workers),
            "--tflite-dir", str(work / name / "tflite"), "--tflite-reports-dir", str(work / name / "reports")]
    args += ["--tflite-cache-dir", str(cache)] if cache else ["--tflite-no-cache"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    created = re.search(r"created: (\d+)/", proc.stdout)  # -n is capped at the machine's slots
    table = json.loads((work / name / "reports" / "summary.json").read_text())["table"]
    return {"wall_s": round(wall, 1), "exit": proc.returncode, "models": len(table),
            "workers": int(created.group(1)) if created else 1,
            "as_expected": sum(r["outcome"] in ("passed", "xfailed") for r in table.values()),
            "cache_hits": sum(r.get("cache_hit") == "hit" for r in table.values())}


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def measure_models(cases, work: Path, args, report: dict) -> None:
    print(f"\n{'model':<26}{'original s':>11}{'MB':>7}{'harness s':>10}{'MB':>7}{'wall x':>8}{'RSS x':>7}"
          f"{'runs':>5}  {'mode':<10}" + " ".join(f"{s:>7}" for s in STAGES))
    for case in cases:
        row = {"harness": run_cli(case, work)}
        if not args.skip_original:
            row["original"] = run_original(case, work)
            row["ratio"] = {"wall": _ratio(row["harness"]["wall_s"], row["original"]["wall_s"]),
                            "rss": _ratio(row["harness"]["peak_rss_mb"], row["original"]["peak_rss_mb"])}
            row["targets"] = TARGETS.get(case.model_id, {})
        if args.ingredients:
            row["ingredients"] = run_ingredients(case, work)
        report["models"][case.model_id] = row
        h, o, r = row["harness"], row.get("original", {}), row.get("ratio", {})
        fmt = (lambda v, spec: format(v, spec) if v is not None else "-")  # noqa: E731
        print(f"{case.model_id:<26}{fmt(o.get('wall_s'), '.1f'):>11}{fmt(o.get('peak_rss_mb'), '.0f'):>7}"
              f"{h['wall_s']:>10.1f}{h['peak_rss_mb']:>7.0f}{fmt(r.get('wall'), '.2f'):>8}{fmt(r.get('rss'), '.2f'):>7}"
              f"{h['onnx2tf_runs']:>5}  {str(h['onnx2tf_mode']):<10}"
              + " ".join(f"{h['stages_s'].get(s, 0):>7.1f}" for s in STAGES), flush=True)
        if h["fixes"]:
            print(f"{'':<26}fixes: {'; '.join(h['fixes'])}")
        if not h["ok"]:
            print(f"{'':<26}harness FAILED: {h['failure'][:200]}")
        if o and not o["ok"]:
            print(f"{'':<26}original FAILED after {o['wall_s']:.0f} s: {o['failure'][:200]}")
        for way in row.get("ingredients", []):
            print(f"{'':<26}  {json.dumps(way)[:220]}")
    rows = report["models"].values()
    runs = [m["harness"]["onnx2tf_runs"] for m in rows if m["harness"]["onnx2tf_runs"]]
    if runs:
        one = sum(n == 1 for n in runs) / len(runs)
        report["one_onnx2tf_run_share"] = round(one, 3)
        print(f"\nonnx2tf converted {sum(n == 1 for n in runs)} of {len(runs)} models in one run ({one:.0%}; "
              f"target >= {ONE_RUN_TARGET:.0%})")
    both = [m for m in rows if m.get("original", {}).get("ok") and m["harness"]["ok"]]
    if both:
        originals = sum(m["original"]["wall_s"] for m in both)
        harnesses = sum(m["harness"]["wall_s"] for m in both)
        report["ratio_models_both_converted"] = round(harnesses / originals, 3)
        print(f"over the {len(both)} models both converted: harness {harnesses:.0f} s, original {originals:.0f} s "
              f"({harnesses / originals:.2f}x; target <= {TOTAL_TIME_TARGET})")
    for model_id, target in TARGETS.items():
        m = report["models"].get(model_id)
        if m and "ratio" in m:
            print(f"{model_id}: wall {m['ratio']['wall']}x (target <= {target['wall']}), peak memory "
                  f"{m['ratio']['rss']}x (target <= {target['rss']})")


def measure_batch(work: Path, args, report: dict) -> None:
    settings = resolve({"tflite_dir": str(work / "forked" / "tflite"), "reports_dir": str(work / "forked" / "reports"),
                        "no_cache": True}, workers=1)
    (tiny,) = [c for c in discover([ROOT / "model_cases" / "examples"]) if c.model_id == SMALLEST_EXAMPLE]
    started = time.perf_counter()
    run_forked(tiny, settings)  # starts the preloaded process, as a batch's first model does
    report["first_model_with_preload_start_s"] = round(time.perf_counter() - started, 2)
    runs = [run_forked(tiny, settings) for _ in range(max(3, args.repeat))]
    server = psutil.Process(forkserver._servers[None, settings.threads].process.pid)
    overheads = [r["overhead_s"] for r in runs]
    report["fixed_cost"] = {"model": SMALLEST_EXAMPLE, "runs": runs, "overhead_s_min": min(overheads),
                            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
                            "preloaded_process_rss_mb": round(server.memory_info().rss / 2**20)}
    print(f"\nfixed cost per model ({SMALLEST_EXAMPLE}, forked): wall minus stages {min(overheads):.2f} s (min; target "
          f"<= 1 s); the first model, with the preloaded process's start: {report['first_model_with_preload_start_s']:.1f} s")
    batch = report["batch"] = {}
    for workers in (1, 2, 4):
        batch[f"n{workers}"] = pytest_batch(work, workers, cache=None)
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    batch["n2_cold_cache"] = pytest_batch(work, 2, cache=cache)
    batch["n2_warm_cache"] = pytest_batch(work, 2, cache=cache)
    b = batch
    report["batch_ratios"] = {"n2_over_n1": round(b["n2"]["wall_s"] / b["n1"]["wall_s"], 3),
                              "n4_over_n2": round(b["n4"]["wall_s"] / b["n2"]["wall_s"], 3),
                              "warm_over_cold": round(b["n2_warm_cache"]["wall_s"] / b["n2_cold_cache"]["wall_s"], 3)}
    print(f"batch of the {b['n1']['models']} bundled examples (pytest model_cases):")
    for name, run in batch.items():
        print(f"  {name:<14}{run['wall_s']:>8.1f} s  {run['workers']} worker(s), exit {run['exit']}, "
              f"{run['as_expected']}/{run['models']} as expected, {run['cache_hits']} from the cache")
    ratios = report["batch_ratios"]
    print(f"  -n 2 / -n 1 = {ratios['n2_over_n1']:.2f} (target <= 0.6); -n 4 / -n 2 = {ratios['n4_over_n2']:.2f} "
          f"(target <= 1.05); warm / cold = {ratios['warm_over_cold']:.3f} (target <= 0.05)"
          + (" (PYTHONDONTWRITEBYTECODE is set: every run compiles every module)"
             if report["machine"]["dont_write_bytecode"] else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, help="a folder of models to measure (default: the real models, "
                        "reports/benchmark/real_models)")
    parser.add_argument("--build-real", action="store_true", help="build the real models first (benchmarks/real_models.py "
                        "in the environment of --real-python)")
    parser.add_argument("--real-python", type=Path, default=ROOT / ".venv-real" / "bin" / "python",
                        help="the Python of the benchmark's model-building environment")
    parser.add_argument("--only", action="append", metavar="MODEL", help="measure only this model (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the fixed-cost measurement")
    parser.add_argument("--skip-original", action="store_true", help="measure the harness only")
    parser.add_argument("--ingredients", action="store_true", help="also measure each ingredient of the onnx2tf stage")
    parser.add_argument("--skip-batch", action="store_true", help="no fixed-cost and pytest batch runs")
    parser.add_argument("--recipes", action="store_true", help="also convert each model with each recipe alone "
                        "(fp32, drq, fp16, int8): sizes, stage seconds, errors, invoke times")
    parser.add_argument("--skip-models", action="store_true", help="no original-against-harness runs per model")
    parser.add_argument("--engines", action="store_true", help="also convert each model with each engine alone "
                        "(onnx2tf, litert) and with auto: wall time, peak memory, stages, float32 and DRQ errors")
    parser.add_argument("--out", default="reports/benchmark.json")
    parser.add_argument("--work", default="reports/benchmark", help="models and outputs of the runs")
    args = parser.parse_args()

    work = (ROOT / args.work).resolve()
    models = (args.models or work / "real_models").resolve()
    if args.build_real:
        build_real(args.real_python, models, args.only)
    if not models.is_dir():
        raise SystemExit(f"benchmark: no models at {models}: pass --build-real (real architectures) or --models DIR")
    cases = [c for c in discover([models]) if c.spec is not None and (not args.only or c.model_id in args.only)]
    report = {"machine": machine(), "command": " ".join(["benchmarks/benchmark.py", *sys.argv[1:]]),
              "models_dir": str(models), "models": {}}
    manifest = models / "manifest.json"
    if manifest.is_file():
        report["built"] = json.loads(manifest.read_text())
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
          f"{report['machine']['ram_gb']} GB RAM; models from {models}")
    if not args.skip_models:
        measure_models(cases, work, args, report)
    if args.recipes:
        measure_recipes(cases, work, report)
    if args.engines:
        measure_engines(cases, work, report)
    if not args.skip_batch:
        measure_batch(work, args, report)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
