"""Regression gate: this run's per-model rows against a stored baseline.

A baseline holds, per model id, what CI must not lose: status, failure signature, exporter,
opset, sizes and errors. Regressions fail the session; improvements are good news that
suggest updating the baseline; timing changes are reported, never gated (machines are noisy).
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import write_json_atomic
from .rows import RECORDED, RECORDED_NUMBERS
from .thresholds import Thresholds

SCHEMA_VERSION = 1
NUMBERS = (int, float)
TIMING_NOTE_FACTOR = 3.0  # per-model timing notes only for big swings; the batch total is always shown


def _rounded(key: str, value):
    """Few enough digits that a baseline diff in review shows real changes, not noise."""
    if not isinstance(value, float):
        return value
    if key == "convert_seconds":
        return round(value, 1)
    if key == "drq_cosine":
        return round(value, 6)
    return float(f"{value:.3g}")


def record(row: dict) -> dict:
    status = row.get("outcome", row["status"])
    return {key: _rounded(key, status if key == "status" else row.get(key)) for key in RECORDED}


class Severity(str, enum.Enum):
    """How a line of the verdict reads: renderers colour by it, never by re-reading the text."""

    ERROR = "error"              # the baseline cannot be used: fails the session
    REGRESSION = "regression"    # fails the session
    IMPROVEMENT = "improvement"
    NOTE = "note"                # reported, never gated (timing, exporter, opset, fixes)
    INFO = "info"                # what was done: written, not compared, no regression


@dataclass(frozen=True)
class Line:
    severity: Severity
    text: str


@dataclass(frozen=True)
class Change:
    model_id: str
    what: str
    label: str  # short, for the summary's "vs baseline" column


@dataclass
class Verdict:
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    notes: list[Change] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def marks(self) -> dict[str, Severity]:
        """Per model, the most serious kind of change it had."""
        marks: dict[str, Severity] = {}
        for severity, bucket in ((Severity.NOTE, self.notes), (Severity.IMPROVEMENT, self.improvements),
                                 (Severity.REGRESSION, self.regressions)):
            marks.update({c.model_id: severity for c in bucket if c.label})
        return marks

    def _add(self, bucket: list, model_id: str, what: str, label: str) -> None:
        bucket.append(Change(model_id, what, label))
        previous = self.labels.get(model_id)
        self.labels[model_id] = label if not previous or previous == "=" else f"{previous}; {label}"


def load(path: Path) -> dict | None:
    """The baseline's data, or None when there is none; ValueError naming the file when it is broken."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); rewrite it with --baseline-update") from None
    problem = _structure_problem(data)
    if problem:
        raise ValueError(f"{path}: {problem}; rewrite it with --baseline-update")
    return data


def _structure_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if data.get("schema_version") != SCHEMA_VERSION:
        return f"baseline schema {data.get('schema_version')!r} is not {SCHEMA_VERSION}"
    if not isinstance(data.get("models"), dict):
        return "'models' must be an object of model id -> record"
    for model_id, entry in data["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
            return f"the record of model {model_id!r} is not an object with a status"
        for key, value in entry.items():
            wanted = NUMBERS if key in RECORDED_NUMBERS else (str,)
            if value is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
                return f"the record of model {model_id!r} has {key} = {value!r}, not a {wanted[0].__name__}"
    for key, kind in (("versions", dict), ("models_dirs", list)):
        if key in data and not isinstance(data[key], kind):
            return f"'{key}' must be a JSON {'object' if kind is dict else 'array'}"
    return None


def write(path: Path, rows: dict[str, dict], versions: dict, previous: dict | None,
          discovered: set[str], models_dirs: list[str]) -> dict:
    """Rows of this run replace theirs; models not run (deselected) keep their record while they exist."""
    models = {m: r for m, r in ((previous or {}).get("models", {})).items() if m in discovered}
    models.update({m: record(r) for m, r in rows.items()})
    data = {"schema_version": SCHEMA_VERSION, "versions": versions, "models_dirs": models_dirs,
            "models": dict(sorted(models.items()))}
    write_json_atomic(path, data)
    return data


def _ratio(new: float, old: float) -> float:
    return new / old if old else float("inf")


def compare(baseline: dict, rows: dict[str, dict], discovered: set[str], t: Thresholds) -> Verdict:
    verdict = Verdict()
    base = baseline.get("models", {})
    _batch_timing(verdict, base, rows)
    for model_id in sorted(set(base) - discovered):
        verdict._add(verdict.regressions, model_id, "was in the baseline and has disappeared", "GONE")
    for model_id, row in sorted(rows.items()):
        new, old = record(row), base.get(model_id)
        if old is None:
            verdict._add(verdict.notes, model_id, "new model, not in the baseline yet", "new")
            continue
        verdict.labels[model_id] = "="
        if old["status"] == "passed" and new["status"] == "passed":
            _compare_figures(verdict, model_id, old, new, t)
        else:
            _compare_outcomes(verdict, model_id, old, new)
    return verdict


def _batch_timing(verdict: Verdict, base: dict, rows: dict[str, dict]) -> None:
    timed = [(base[m].get("convert_seconds"), r.get("convert_seconds")) for m, r in rows.items() if m in base]
    timed = [(o, n) for o, n in timed if o and n]
    if timed:
        old_total, new_total = sum(o for o, _ in timed), sum(n for _, n in timed)
        verdict.notes.append(Change("(all)", f"conversions took {new_total:.1f} s, {old_total:.1f} s in the "
                                             f"baseline (x{new_total / old_total:.2f}; reported, not gated)", ""))


def _compare_outcomes(verdict: Verdict, model_id: str, old: dict, new: dict) -> None:
    """At least one side failed: what changed is whether, or how, it fails."""
    was_ok, is_ok = old["status"] == "passed", new["status"] == "passed"
    if was_ok:
        verdict._add(verdict.regressions, model_id, f"passed before, now {new['status']}: {new['failure_signature']}",
                     f"PASS->{new['status'].upper()} ({new['failure_kind']})")
    elif is_ok:
        verdict._add(verdict.improvements, model_id, f"{old['status']} before ({old.get('failure_kind')}), now passes",
                     f"{old['status'].upper()}->PASS")
    elif new["failure_kind"] is None:  # a strict xfail whose model now converts
        verdict._add(verdict.improvements, model_id, "expected to fail but now converts: remove its "
                     "[expect] and update the baseline", "now converts")
    elif new["failure_signature"] != old.get("failure_signature"):
        verdict._add(verdict.regressions, model_id,
                     f"fails differently: was '{old.get('failure_signature')}', now '{new['failure_signature']}'",
                     f"new failure ({new['failure_kind']})")


def _compare_figures(verdict: Verdict, model_id: str, old: dict, new: dict, t: Thresholds) -> None:
    """Both passed: errors and size are gated, how it converted and how long it took are reported."""
    for key, factor, label in (("drq_range_rel_err", t.drq_err, "DRQ error"),
                               ("fp32_range_rel_err", t.fp32_err, "fp32 error")):
        o, n = old.get(key), new.get(key)
        if o is None or n is None:
            continue
        if n > t.err_floor and n > o * factor:
            verdict._add(verdict.regressions, model_id,
                         f"{label} grew x{_ratio(n, o):.1f} ({o:.3g} -> {n:.3g}; gate x{factor:g} above {t.err_floor:g})",
                         f"{label} x{_ratio(n, o):.1f}")
        elif o > t.err_floor and n * factor < o:
            verdict._add(verdict.improvements, model_id, f"{label} shrank ({o:.3g} -> {n:.3g})",
                         f"{label} /{o / max(n, 1e-30):.1f}")
    o, n = old.get("tflite_bytes"), new.get("tflite_bytes")
    if o and n:
        growth = n / o - 1
        if growth > t.size:
            verdict._add(verdict.regressions, model_id,
                         f"deliverable grew {growth:+.0%} ({o} -> {n} bytes; gate +{t.size:.0%})", f"size {growth:+.0%}")
        elif growth < -t.size:
            verdict._add(verdict.improvements, model_id, f"deliverable shrank {growth:+.0%} ({o} -> {n} bytes)",
                         f"size {growth:+.0%}")
    for key in ("exporter", "opset", "fixes_applied"):  # what changed in how it converts: reported
        if old.get(key) != new.get(key):
            verdict.notes.append(Change(model_id, f"{key} changed: {old.get(key)} -> {new.get(key)}", ""))
    o, n = old.get("convert_seconds"), new.get("convert_seconds")
    if o and n and (n > o * TIMING_NOTE_FACTOR or n * TIMING_NOTE_FACTOR < o):
        verdict.notes.append(Change(model_id, f"conversion took {n:.1f} s, {o:.1f} s in the baseline "
                                              "(reported, not gated)", ""))


@dataclass(frozen=True)
class GateOutcome:
    lines: tuple[Line, ...]
    labels: dict[str, str] = field(default_factory=dict)   # model -> short text for the "vs baseline" column
    marks: dict[str, Severity] = field(default_factory=dict)  # model -> its most serious change
    failed: bool = False
    gone: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"lines": [{"severity": ln.severity.value, "text": ln.text} for ln in self.lines],
                "labels": dict(sorted(self.labels.items())),
                "marks": {m: v.value for m, v in sorted(self.marks.items())},
                "failed": self.failed, "gone": list(self.gone)}


def gate(path: Path, rows: dict[str, dict], *, discovered: set[str], thresholds: Thresholds,
         versions: dict, models_dirs: list[str], update: bool) -> GateOutcome:
    """The session's verdict against the baseline file (or its rewrite, with update)."""
    try:
        previous = load(path)
    except (ValueError, OSError) as exc:
        if not update:
            return GateOutcome((Line(Severity.ERROR, f"ERROR: cannot use the baseline {exc}"),), failed=True)
        previous = None  # a broken baseline is exactly what --baseline-update is for
    if update:
        if previous is not None and previous.get("models_dirs") != models_dirs:
            previous = None  # records of another models folder do not carry over
        data = write(path, rows, versions, previous, discovered, models_dirs)
        return _info(f"baseline written: {path} ({len(data['models'])} models); commit it")
    if previous is None:
        return _info(f"no baseline at {path}: nothing to gate on; create it with "
                     "pytest model_cases --baseline-update (then commit it)")
    if previous.get("models_dirs") != models_dirs:
        return _info(f"the baseline {path} was made for models in {previous.get('models_dirs')}, this "
                     f"run converts {models_dirs}: not compared; give this folder its own baseline "
                     "with --baseline FILE --baseline-update")
    verdict = compare(previous, rows, discovered, thresholds)
    gone = tuple(c.model_id for c in verdict.regressions if c.label == "GONE")
    return GateOutcome(_verdict_lines(verdict, previous, versions, path, thresholds), dict(verdict.labels),
                       verdict.marks(), verdict.failed, gone)


def _info(text: str) -> GateOutcome:
    return GateOutcome((Line(Severity.INFO, text),))


def _verdict_lines(verdict: Verdict, previous: dict, versions: dict, path: Path, thresholds: Thresholds):
    lines = []
    old_versions = previous.get("versions", {})
    changed = {k: (old_versions.get(k), v) for k, v in versions.items() if old_versions.get(k) != v}
    if changed:
        lines.append(Line(Severity.NOTE, "note: tool versions differ from the baseline's: "
                          + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())))
    lines += [Line(Severity.REGRESSION, f"REGRESSION {c.model_id}: {c.what}") for c in verdict.regressions]
    lines += [Line(Severity.IMPROVEMENT, f"improved {c.model_id}: {c.what}") for c in verdict.improvements]
    lines += [Line(Severity.NOTE, f"note {c.model_id}: {c.what}") for c in verdict.notes]
    if verdict.improvements:
        lines.append(Line(Severity.IMPROVEMENT, "improvements: update the baseline with --baseline-update to keep them"))
    if verdict.failed:
        lines.append(Line(Severity.REGRESSION, f"{len(verdict.regressions)} regression(s) against {path} "
                                               f"(thresholds {thresholds.describe()})"))
    else:
        lines.append(Line(Severity.INFO, f"no regression against {path}"))
    return tuple(lines)
