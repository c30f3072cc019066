"""Merge the reports of a batch split over several CI machines:
`python -m converter.merge SHARD_REPORTS_DIR... [--reports-dir DIR] [--baseline FILE]`.

Each shard runs part of the models (pytest-split's duration-balanced groups, a CI matrix) and
writes its own reports folder; this writes one summary.json/.md/.html, one junit.xml and one
verdict against the baseline, judged exactly as a single run would judge it. A model in the
baseline that no shard ran is GONE: a split that loses a model fails the gate. Exit status: 0,
1 when a model failed or the gate found a regression, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .protocol import write_bytes_atomic
from .rows import Outcome
from .settings import BY_NAME, SettingsError, argparse_help, option_kwargs, resolve
from .summaries import conclude, relative_dirs

MERGED_SETTINGS = ("reports_dir", "baseline", "regression_threshold")


class MergeError(Exception):
    pass


def read_shard(folder: Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        summary = json.loads(path.read_text())
        models = summary["models"]
        if not isinstance(models, dict):
            raise TypeError("models")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MergeError(f"{path}: not a shard's summary ({type(exc).__name__}: {exc})") from None
    return summary


def merge_rows(shards: list[tuple[Path, dict]]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    where: dict[str, Path] = {}
    for folder, summary in shards:
        for model_id, row in summary["models"].items():
            if row.get("outcome") == Outcome.GONE.value:
                continue  # judged again below, against every shard at once
            if model_id in rows:
                raise MergeError(f"model {model_id} is in two shards ({where[model_id]} and {folder}): "
                                 "a split must give each model to one shard")
            rows[model_id], where[model_id] = row, folder
    return rows


def merge_junit(folders: list[Path]) -> bytes:
    """One <testsuite> with every shard's test cases and the summed counts."""
    merged = ET.Element("testsuite", name="pytest")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    for folder in folders:
        path = Path(folder) / "junit.xml"
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            raise MergeError(f"{path}: not a JUnit report ({exc})") from None
        for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
            for key in totals:
                totals[key] += int(suite.get(key, 0))
            seconds += float(suite.get("time", 0))
            merged.extend(suite.findall("testcase"))
    for key, value in totals.items():
        merged.set(key, str(value))
    merged.set("time", f"{seconds:.3f}")
    suites = ET.Element("testsuites")
    suites.append(merged)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converter.merge", allow_abbrev=False,
                                     description="Merge the reports folders of a batch's shards into one.")
    parser.add_argument("shards", nargs="+", type=Path, help="the reports folder of each shard")
    for name in MERGED_SETTINGS:
        setting = BY_NAME[name]
        parser.add_argument(setting.flag, dest=name, default=None, help=argparse_help(f"{setting.help} [env {setting.env}]"),
                            **option_kwargs(setting))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve({name: getattr(args, name) for name in MERGED_SETTINGS})
        shards = [(folder, read_shard(folder)) for folder in args.shards]
        rows = merge_rows(shards)
        junit = merge_junit([folder for folder, _ in shards])
    except (SettingsError, MergeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    first = shards[0][1]
    dirs = sorted({d for _, s in shards for d in s.get("settings", {}).get("models_dirs", [])})
    summary, gate = conclude(
        rows, reports_dir=settings.reports_dir, versions=first.get("versions", {}),
        settings={**first.get("settings", {}), "shards": [str(f) for f, _ in shards]},
        baseline=settings.baseline, thresholds=settings.thresholds,
        models_dirs=relative_dirs(dirs, Path.cwd()), discovered=set(rows))
    write_bytes_atomic(settings.reports_dir / "junit.xml", junit)
    counts = summary["counts"]
    print(f"merged {len(shards)} shards: {counts.get('passed', 0)} converted and verified, "
          f"{counts.get('failed', 0)} failed, {counts.get('xfailed', 0)} failed as expected; "
          f"summary: {settings.reports_dir / 'summary.md'} (and .html, .json, junit.xml)")
    for line in gate.lines if gate else ():
        print(line.text)
    return 1 if counts.get("failed", 0) or (gate and gate.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
