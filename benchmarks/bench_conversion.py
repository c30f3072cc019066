"""Speed and memory figures of the conversion, printed, never asserted (machines are noisy).

    .venv/bin/python benchmarks/bench_conversion.py [--models-dir DIR] [--workers N] [--repeat R]

Converts every discovered model in isolated children, `--workers` at a time (each child gets
its share of the cores, as under pytest -n), and prints per-model stage seconds and peak
resident memory, then the wall time of the batch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converter.discovery import discover  # noqa: E402
from converter.runner import convert_case  # noqa: E402
from converter.settings import resolve  # noqa: E402

STAGES = ("load", "export", "savedmodel", "tflite", "verify")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default="model_cases/examples")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    out = Path(tempfile.mkdtemp(prefix="bench-"))
    settings = resolve({"models_dir": [args.models_dir], "tflite_dir": str(out / "tflite"),
                        "reports_dir": str(out / "reports"), "no_cache": True}, workers=args.workers)  # measure conversions
    cases = [c for c in discover(settings.models_dirs, timeout=settings.timeout) if c.spec is not None]
    print(f"{len(cases)} models, {args.workers} worker(s), {settings.threads} thread(s) and "
          f"{settings.memory_limit_mb} MB per conversion, {args.repeat} repeat(s); outputs in {out}")
    print(f"{'model':<22}{'status':<8}" + "".join(f"{s:>11}" for s in STAGES) + f"{'total s':>9}{'peak MB':>9}")
    walls = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(lambda c: convert_case(c, settings), cases))
        walls.append(time.perf_counter() - start)
        for r in results:
            stages = "".join(f"{r.stage_seconds.get(s, float('nan')):>11.2f}" for s in STAGES)
            print(f"{r.model_id:<22}{r.status:<8}{stages}{r.seconds:>9.2f}{r.peak_rss_mb:>9.0f}")
    peaks = [r.peak_rss_mb for r in results]
    print(f"batch wall time: {statistics.median(walls):.1f} s (median of {len(walls)}); "
          f"per model {statistics.median(walls) / max(len(cases), 1):.2f} s; "
          f"peak RSS per conversion: max {max(peaks):.0f} MB, median {statistics.median(peaks):.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
