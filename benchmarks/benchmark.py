"""Speed and memory of the harness against the workflow it replaces, in one run on one machine.

    .venv/bin/python benchmarks/benchmark.py [--repeat R] [--original-repeat R] [--skip-original] [--skip-batch]

Builds the benchmark models in code (fixed seeds: ResNet-18-, MobileNetV3-small-, ConvNeXt-tiny-
and BERT-shaped), then measures and prints, and writes to reports/benchmark.json:
- per benchmark model, the original workflow (one process per model, benchmarks/original_workflow.py)
  and the harness (a conversion child forked from a warm preloaded process, as in a batch):
  wall seconds and peak resident memory, sampled the same way for both, the harness's stage
  split, and their ratios;
- the harness's fixed cost per model: wall minus its stages, on the smallest bundled example;
- the batch (benchmark models and bundled examples) as users run it, `pytest -n N model_cases`,
  under -n 1, -n 2 and -n 4, and a warm rerun of an unchanged batch from the conversion cache.
Figures only: nothing here passes or fails (machines are noisy); the targets are printed beside.
"""
from __future__ import annotations

import argparse
import contextlib
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
TARGETS = {"resnet18": {"wall": 0.15, "rss": 0.35}, "mobilenet_v3_small": {"wall": 0.2}}
SMALLEST_EXAMPLE = "two_in_two_out"


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
            "system": platform.platform(), "tools": tool_versions()}


def shapes_of(case) -> list[str]:
    return [",".join(map(str, i.shape)) + (":int64" if "int" in i.dtype else "") for i in case.spec.inputs]


def run_original(case, work: Path) -> dict:
    out = work / "original" / case.model_id
    shutil.rmtree(out, ignore_errors=True)
    memory = PeakMemory()
    start = time.perf_counter()
    out.mkdir(parents=True)
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "original_workflow.py"), str(case.path),
                                 str(out), *shapes_of(case)], stdout=subprocess.PIPE, stderr=log,
                                text=True, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        memory.watch(proc.pid)
        stdout, _ = proc.communicate()
    wall, peak = time.perf_counter() - start, memory.stop()
    row = {"wall_s": round(wall, 2), "peak_rss_mb": round(peak), "ok": proc.returncode == 0}
    if proc.returncode == 0:
        return {**row, **json.loads(stdout.strip().splitlines()[-1])}
    (out / "stdout.txt").write_text(stdout)  # onnx2tf prints its errors there, then exits 1
    return {**row, "failure": _why(stdout + (out / "log.txt").read_text(errors="replace"), proc.returncode)}


def _why(log: str, status: int) -> str:
    """The cause a user of the original workflow would find in its output."""
    flex = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", log)))
    if flex:
        return f"TFLite builtins lack {', '.join(flex)} (the original workflow has no fix for it)"
    errors = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in log.splitlines()
              if "error" in ln.lower() and not ln.startswith(("W0000", "E0000"))]
    return (errors[-1] if errors else f"exit status {status}")[:300]


def run_harness(case, settings) -> dict:
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
            "stages_s": result.stage_seconds, "overhead_s": round(wall - sum(result.stage_seconds.values()), 2),
            "failure": None if result.passed else f"{result.failure.kind.value}: {result.failure.message}"}


def summarise(runs: list[dict]) -> dict:
    walls, peaks = [r["wall_s"] for r in runs], [r["peak_rss_mb"] for r in runs]
    return {"wall_s": {"min": min(walls), "median": round(statistics.median(walls), 2)},
            "peak_rss_mb": {"min": min(peaks), "median": round(statistics.median(peaks))},
            "ok": all(r["ok"] for r in runs), "runs": runs}


def pytest_batch(work: Path, models_dir: Path, workers: int, *, cache: Path | None) -> dict:
    name = f"n{workers}" + ("-cache" if cache else "")
    args = [sys.executable, "-m", "pytest", "model_cases", "-p", "no:cacheprovider", "-n", str(workers),
            "--models-dir", str(models_dir), "--models-dir", "model_cases/examples",
            "--tflite-dir", str(work / name / "tflite"), "--reports-dir", str(work / name / "reports")]
    args += ["--tflite-cache-dir", str(cache)] if cache else ["--no-cache"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    created = re.search(r"created: (\d+)/", proc.stdout)  # -n is capped at the machine's slots
    summary = json.loads((work / name / "reports" / "summary.json").read_text())
    rows = summary["models"].values()
    return {"wall_s": round(wall, 1), "exit": proc.returncode, "models": len(rows),
            "workers": int(created.group(1)) if created else 1,
            "passed": sum(r["outcome"] in ("passed", "xfailed") for r in rows),
            "cache_hits": sum(bool(r.get("cache_hit")) for r in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of each harness measurement")
    parser.add_argument("--original-repeat", type=int, default=1, help="repetitions of the original workflow "
                        "per model (minutes each)")
    parser.add_argument("--skip-original", action="store_true", help="measure the harness only")
    parser.add_argument("--skip-batch", action="store_true", help="no pytest batch runs")
    parser.add_argument("--only", action="append", metavar="MODEL", help="measure only this benchmark model "
                        "(repeatable; the batch runs still take every model)")
    parser.add_argument("--out", default="reports/benchmark.json")
    parser.add_argument("--work", default="reports/benchmark", help="models and outputs of the runs")
    args = parser.parse_args()

    work = (ROOT / args.work).resolve()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from models import build

    models_dir = work / "models"
    build(models_dir)
    cases = [c for c in discover([models_dir]) if c.spec is not None and (not args.only or c.model_id in args.only)]
    settings = resolve({"tflite_dir": str(work / "harness" / "tflite"), "reports_dir": str(work / "harness" / "reports"),
                        "no_cache": True}, workers=1)
    report = {"machine": machine(), "command": " ".join(["benchmarks/benchmark.py", *sys.argv[1:]]),
              "settings": {"threads": settings.threads, "max_conversions": settings.max_conversions}, "models": {}}
    print(f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
          f"{report['machine']['ram_gb']} GB RAM; {settings.threads} thread(s) per conversion")

    (tiny,) = [c for c in discover([ROOT / "model_cases" / "examples"]) if c.model_id == SMALLEST_EXAMPLE]
    started = time.perf_counter()
    run_harness(tiny, settings)  # starts the preloaded process, as a batch's first model does
    report["first_model_with_preload_start_s"] = round(time.perf_counter() - started, 2)
    fixed = summarise([run_harness(tiny, settings) for _ in range(max(3, args.repeat))])
    server = psutil.Process(forkserver._servers[settings.threads].process.pid)
    report["preloaded_process_rss_mb"] = round(server.memory_info().rss / 2**20)  # once per worker, shared
    spawned = resolve({**{"tflite_dir": str(work / "harness" / "tflite"),
                          "reports_dir": str(work / "harness" / "reports")}, "no_cache": True, "no_preload": True})
    report["fixed_cost"] = {"model": SMALLEST_EXAMPLE, "preloaded": fixed,
                            "spawned": summarise([run_harness(tiny, spawned) for _ in range(max(3, args.repeat))])}
    overheads = [r["overhead_s"] for r in fixed["runs"]]
    print(f"fixed cost per model ({SMALLEST_EXAMPLE}): wall minus stages {min(overheads):.2f} s (min), whole "
          f"conversion {fixed['wall_s']['min']:.2f} s forked vs "
          f"{report['fixed_cost']['spawned']['wall_s']['min']:.2f} s spawned (target overhead <= 1 s); "
          f"the first model, with the preloaded process's start: {report['first_model_with_preload_start_s']:.1f} s; "
          f"the preloaded process holds {report['preloaded_process_rss_mb']} MB (once per worker, not in the "
          "per-model figures)")

    print(f"\n{'model':<20}{'original s':>11}{'MB':>7}{'harness s':>11}{'MB':>7}{'wall x':>8}{'RSS x':>7}  "
          + " ".join(f"{s:>10}" for s in STAGES))
    for case in cases:
        harness = summarise([run_harness(case, settings) for _ in range(args.repeat)])
        row = {"harness": harness}
        if not args.skip_original:
            original = summarise([run_original(case, work) for _ in range(args.original_repeat)])
            row["original"] = original
            row["ratio"] = {"wall": round(harness["wall_s"]["median"] / original["wall_s"]["median"], 3),
                            "rss": round(harness["peak_rss_mb"]["median"] / original["peak_rss_mb"]["median"], 3)}
            row["targets"] = TARGETS.get(case.model_id, {})
        report["models"][case.model_id] = row
        stages = harness["runs"][0]["stages_s"]
        o = row.get("original", {"wall_s": {"median": float("nan")}, "peak_rss_mb": {"median": float("nan")}})
        r = row.get("ratio", {"wall": float("nan"), "rss": float("nan")})
        print(f"{case.model_id:<20}{o['wall_s']['median']:>11.1f}{o['peak_rss_mb']['median']:>7.0f}"
              f"{harness['wall_s']['median']:>11.1f}{harness['peak_rss_mb']['median']:>7.0f}"
              f"{r['wall']:>8.2f}{r['rss']:>7.2f}  " + " ".join(f"{stages.get(s, 0):>10.1f}" for s in STAGES)
              + ("" if harness["ok"] else f"  harness FAILED {harness['runs'][0]['failure']}")
              + ("" if row.get("original", {"ok": True})["ok"] else
                 f"  original FAILED after {o['wall_s']['median']:.0f} s: {row['original']['runs'][0]['failure']}"))
    if not args.skip_original:
        both = [m for m in report["models"].values() if m["original"]["ok"] and m["harness"]["ok"]]
        originals = sum(m["original"]["wall_s"]["median"] for m in both)
        harnesses = sum(m["harness"]["wall_s"]["median"] for m in both)
        if both:
            report["ratio_models_both_converted"] = round(harnesses / originals, 3)
            print(f"{'(both converted)':<20}{originals:>11.1f}{'':>7}{harnesses:>11.1f}{'':>7}"
                  f"{harnesses / originals:>8.2f}  ({len(both)} of {len(report['models'])} models)")

    if not args.skip_batch:
        batch = report["batch"] = {}
        for workers in (1, 2, 4):
            batch[f"n{workers}"] = pytest_batch(work, models_dir, workers, cache=None)
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        batch["n2_cold_cache"] = pytest_batch(work, models_dir, 2, cache=cache)
        batch["n2_warm_cache"] = pytest_batch(work, models_dir, 2, cache=cache)
        b = batch
        report["batch_ratios"] = {"n2_over_n1": round(b["n2"]["wall_s"] / b["n1"]["wall_s"], 3),
                                  "n4_over_n2": round(b["n4"]["wall_s"] / b["n2"]["wall_s"], 3),
                                  "warm_over_cold": round(b["n2_warm_cache"]["wall_s"] / b["n2_cold_cache"]["wall_s"], 3)}
        print(f"\nbatch of {b['n1']['models']} models (pytest model_cases):")
        for name, run in batch.items():
            print(f"  {name:<14}{run['wall_s']:>8.1f} s  {run['workers']} worker(s), exit {run['exit']}, "
                  f"{run['passed']}/{run['models']} as "
                  f"expected, {run['cache_hits']} from the cache")
        ratios = report["batch_ratios"]
        print(f"  -n 2 / -n 1 = {ratios['n2_over_n1']:.2f} (target <= 0.6); -n 4 / -n 2 = {ratios['n4_over_n2']:.2f} "
              f"(target <= 1.05); warm / cold = {ratios['warm_over_cold']:.3f} (target <= 0.05)")

    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
