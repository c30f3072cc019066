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
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from . import __version__
from .baseline import GATE_PROPERTY
from .protocol import write_bytes_atomic
from .results import Outcome, Result
from .settings import BASELINE_UPDATE, BY_OPTION, SettingsError, argparse_help, flag_of, option_kwargs, resolve
from .summaries import SummariesUnwritten, conclude, relative_dirs
from .summary_file import SummaryUnreadable, read_regular, read_summary

MERGED_SETTINGS = ("reports_dir", "baseline", "regression_threshold")
OWN_HELP = {"reports_dir": "where the merged summary.json/.md/.html and junit.xml go"}


class MergeError(Exception):
    pass


def read_shard(folder: Path) -> dict[str, Result]:
    """A shard's own records from its summary.json, each checked (a tampered or truncated file is one
    line); rows its run kept from earlier runs in that folder are not the shard's."""
    path = Path(folder) / "summary.json"
    try:
        return read_summary(path).own()
    except SummaryUnreadable as exc:
        raise MergeError(f"{path}: not a shard's summary ({exc})") from None


def merge_records(shards: list[tuple[Path, dict[str, Result]]]) -> tuple[dict[str, Result], dict[str, Path]]:
    """Every shard's records as one, and the shard folder each came from (its artifacts are there)."""
    records: dict[str, Result] = {}
    where: dict[str, Path] = {}
    for folder, shard in shards:
        for model_id, record in shard.items():
            if record.outcome is Outcome.GONE:
                continue  # judged again below, against every shard at once
            if model_id in records:
                raise MergeError(f"model {model_id} is in two shards ({where[model_id]} and {folder}): "
                                 "a split must give each model to one shard")
            records[model_id], where[model_id] = record, folder
    return records, where


def _model_of(case: ET.Element, ids: set[str]) -> bool:
    """A model's test case (the plugin's, or a test taking the `conversion` fixture) belongs to one
    of the shard's models: named by its id, or by its id in brackets (ASCII-escaped, as pytest does)."""
    name = case.get("name", "")
    inner = name.split("[", 1)[1][:-1] if name.endswith("]") and "[" in name else None
    known = ids | {i.encode("unicode_escape").decode("ascii") for i in ids}
    return name in known or inner in known


def merge_junit(folders: list[Path], records: list[dict[str, Result]] | None = None) -> ET.Element:
    """One <testsuite> with every shard's test cases and the summed counts. A model's test case
    (one with the plugin's properties) that its shard's summary does not hold is refused: the two
    files would tell different stories. A shard's own gate failures are left out: the merged
    verdict adds its own (`add_gate_cases`)."""
    merged = ET.Element("testsuite", name="pytest")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    for index, folder in enumerate(folders):
        path = Path(folder) / "junit.xml"
        try:
            root = ET.fromstring(read_regular(path))
        except (OSError, ET.ParseError) as exc:
            raise MergeError(f"{path}: not a JUnit report ({exc})") from None
        ids = set(records[index]) if records is not None else None
        for case in root.iter("testcase"):
            if ids is not None and case.find("properties/property[@name='failure_kind']") is not None \
                    and not _model_of(case, ids):
                raise MergeError(f"{path}: its test case {case.get('name')!r} is a model that the shard's "
                                 "summary.json does not hold (files of two runs?)")
        for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
            try:
                for key in totals:
                    totals[key] += int(suite.get(key, 0))
                seconds += float(suite.get("time", 0))
            except ValueError as exc:
                raise MergeError(f"{path}: not a JUnit report (a count is not a number: {exc})") from None
            for case in suite.findall("testcase"):
                if case.find(f"properties/property[@name='{GATE_PROPERTY}']") is None:
                    merged.append(case)
                else:  # one shard's verdict, not the batch's
                    totals["tests"] -= 1
                    totals["failures"] -= 1
    for key, value in totals.items():
        merged.set(key, str(value))
    merged.set("time", f"{seconds:.3f}")
    suites = ET.Element("testsuites")
    suites.append(merged)
    return suites


def add_gate_cases(suites: ET.Element, gate, records: dict[str, Result], baseline: str) -> bytes:
    """The merged gate's failures as failed test cases, as a run writes them: a regressed model's
    under its own test case's name, a gone model (and an unusable baseline) under the baseline's."""
    suite = suites.find("testsuite")
    cases = list(suite.iter("testcase"))
    for failure in gate.unseen_failures(records) if gate else ():
        own = next((c for c in cases if failure.model_id and _model_of(c, {failure.model_id})), None)
        if own is not None:
            classname, name = own.get("classname", ""), own.get("name", "")
        else:  # as pytest's junitxml names a node id `<baseline>::<model>`
            dotted = baseline.replace("/", ".")
            classname, name = (dotted, failure.model_id) if failure.model_id else ("", dotted)
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0.000")
        ET.SubElement(ET.SubElement(case, "properties"), "property", name=GATE_PROPERTY, value=failure.kind)
        ET.SubElement(case, "failure", message=failure.text).text = failure.text
        for key in ("tests", "failures"):
            suite.set(key, str(int(suite.get(key)) + 1))
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def _header(folder: Path) -> dict:
    """A shard's versions and settings (read_shard has checked the file)."""
    try:
        data = json.loads(read_regular(Path(folder) / "summary.json").decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # replaced since read_shard read it
        raise MergeError(f"{Path(folder) / 'summary.json'}: not a shard's summary ({exc})") from None
    header = {k: data.get(k) for k in ("versions", "settings")}
    for key in header:
        if not isinstance(header[key], dict):
            raise MergeError(f"{Path(folder) / 'summary.json'}: not a shard's summary ('{key}' is not an object)")
    if not all(isinstance(d, str) for d in header["settings"].get("models_dirs", [])):
        raise MergeError(f"{Path(folder) / 'summary.json'}: not a shard's summary (models_dirs is not a list of folders)")
    return header


def same_versions(folders: list[Path], headers: list[dict]) -> None:
    """Shards of one batch were converted by the same tools: the merged summary states one set of
    versions, so shards made with others cannot be merged under it."""
    for folder, header in zip(folders[1:], headers[1:]):
        if header["versions"] != headers[0]["versions"]:
            differ = sorted(k for k in set(header["versions"]) | set(headers[0]["versions"])
                            if header["versions"].get(k) != headers[0]["versions"].get(k))
            name = differ[0]
            raise MergeError(f"shard {folder} was made with {name} {header['versions'].get(name)} where shard "
                             f"{folders[0]} has {headers[0]['versions'].get(name)}: shards of one batch use the same "
                             "tool versions (rerun it)")


def outside_shards(reports_dir: Path, folders: list[Path]) -> None:
    """The merged reports go where no shard is: writing them into a shard's folder would replace
    that shard's own summary and JUnit, the merge's very input."""
    target = Path(os.path.realpath(reports_dir))
    for folder in folders:
        shard = Path(os.path.realpath(folder))
        if target == shard or shard in target.parents or target in shard.parents:
            raise MergeError(f"--reports-dir {reports_dir} {'is' if target == shard else 'overlaps'} the shard "
                             f"folder {folder}: merging there would overwrite that shard; give another folder")


def build_parser() -> argparse.ArgumentParser:
    name = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(prog="python -m converter.merge" if name in ("__main__.py", "merge.py", "") else name,
                                     allow_abbrev=False,
                                     description="Merge the reports folders of a batch's shards into one.")
    parser.add_argument("shards", nargs="+", type=Path, help="the reports folder of each shard")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for name in MERGED_SETTINGS:
        setting = BY_OPTION[name]
        parser.add_argument(setting.short_flag, setting.flag, dest=name, default=None,  # its own spelling, and pytest's
                            help=argparse_help(f"{OWN_HELP.get(name, setting.help)} [env {setting.env}]"),
                            **option_kwargs(setting))
    parser.add_argument("--baseline-update", flag_of(BASELINE_UPDATE), action="store_true",
                        help="rewrite the baseline from the merged shards instead of gating on it")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = resolve({name: getattr(args, name) for name in MERGED_SETTINGS})
        outside_shards(settings.reports_dir, args.shards)
        shards = [(folder, read_shard(folder)) for folder in args.shards]
        headers = [_header(folder) for folder in args.shards]
        same_versions(args.shards, headers)
        records, where = merge_records(shards)
        junit = merge_junit([folder for folder, _ in shards], [shard for _, shard in shards])
    except (SettingsError, MergeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    first = headers[0]
    dirs = sorted({d for h in headers for d in h.get("settings", {}).get("models_dirs", [])})
    try:
        summary, gate = conclude(
            records, reports_dir=settings.reports_dir, versions=first.get("versions", {}),
            settings={**first.get("settings", {}), "shards": [str(f) for f, _ in shards]},
            baseline=settings.baseline, thresholds=settings.thresholds,
            models_dirs=relative_dirs(dirs, Path.cwd()), discovered=set(records), update=args.baseline_update,
            reports_of=where)
        (baseline,) = relative_dirs([settings.baseline], Path.cwd())
        write_bytes_atomic(settings.reports_dir / "junit.xml", add_gate_cases(junit, gate, records, baseline))
    except (SummariesUnwritten, OSError) as exc:  # a full or read-only disk: one line, not a traceback
        reason = str(exc) if isinstance(exc, SummariesUnwritten) else f"{exc.filename}: {exc.strerror or exc}"
        print(f"{parser.prog}: error: the merged reports cannot be written: {reason}", file=sys.stderr)
        return 1
    counts = summary["counts"]
    print(f"merged {len(shards)} shards: {counts.get('passed', 0)} converted and verified, "
          f"{counts.get('failed', 0)} failed, {counts.get('xfailed', 0)} failed as expected; "
          f"summary: {settings.reports_dir / 'summary.md'} (and .html, .json, junit.xml)")
    for line in gate.lines if gate else ():
        print(line.text)
    return 1 if counts.get("failed", 0) or (gate and gate.failed) else 0


if __name__ == "__main__":
    sys.exit(main())
