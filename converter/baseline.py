"""Regression gate: this run's per-model records against a stored baseline.

A baseline holds, per model id, what CI must not lose: status, failure signature, exporter,
opset, sizes and errors. Regressions fail the session; improvements are good news that
suggest updating the baseline; timing changes are reported, never gated (machines are noisy).
"""
from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .columns import finite, row
from .protocol import write_json_atomic
from .recipes import RECIPES
from .results import Outcome, Result
from .thresholds import Thresholds

SCHEMA_VERSION = 2  # 2: per-recipe figures; 1 (drq / fp32 fields) is read and converted
NUMBERS = (int, float)
TIMING_NOTE_FACTOR = 3.0  # per-model timing notes only for big swings; the batch total is always shown
# failure_message: the signature's figures, so a "fails differently" line shows them (the signature, not it, is compared)
FIELDS = {"status": str, "failure_kind": str, "failure_signature": str, "failure_message": str, "exporter": str, "opset": int,
          "fixes_applied": str, "convert_seconds": float, "delivered": str, "onnx2tf_runs": int, "tf_err": float,
          "recipes": dict}
RECIPE_FIELDS = {"bytes": int, "err": float, "cosine": float}
MAX_DEPTH = 64  # a baseline nested deeper than any record is no baseline (json recurses on it)


def _figure(key: str, value):
    """Few enough digits that a baseline diff in review shows real changes, not noise."""
    if not isinstance(value, float):
        return value
    if key == "convert_seconds":
        return round(value, 1)
    if key == "cosine":
        return round(value, 6)
    return float(f"{value:.3g}")


def record(result: Result) -> dict:
    """What the baseline keeps of a model: its verdict, how it converted, each recipe's figures."""
    cells = row(result)
    recipes = {d.recipe: {"bytes": d.bytes,
                          "err": _figure("err", finite(d.worst.range_rel_err) if d.verified else None),
                          "cosine": _figure("cosine", finite(min(c.cosine for c in d.outputs)) if d.verified else None)}
               for d in result.deliverables}
    return {"status": cells["outcome"], "failure_kind": cells["failure_kind"],
            "failure_signature": result.failure.signature if result.failure else None,
            "failure_message": result.failure.message if result.failure else None,
            "exporter": cells["exporter"], "opset": cells["opset"], "fixes_applied": cells["fixes_applied"],
            "convert_seconds": _figure("convert_seconds", result.seconds) if result.status != "gone" else None,
            "delivered": result.delivered, "onnx2tf_runs": cells["onnx2tf_runs"],
            "tf_err": _figure("err", finite(result.tf_error)), "recipes": dict(sorted(recipes.items()))}


def _from_schema_1(entry: dict) -> dict:
    """A schema-1 record (fixed drq / fp32 fields) in schema 2's shape."""
    recipes = {}
    if entry.get("tflite_bytes") is not None:
        recipes["drq"] = {"bytes": entry["tflite_bytes"], "err": entry.get("drq_range_rel_err"),
                          "cosine": entry.get("drq_cosine")}
    kept = {k: entry[k] for k in FIELDS if k in entry and k != "recipes"}  # what schema 1 had (no onnx2tf_runs)
    # schema 1's float32 TFLite twin stood for the conversion's own error, which the TF model's now gives
    return {**kept, "recipes": recipes, "delivered": "drq" if entry.get("status") == "passed" else None,
            "tf_err": entry.get("fp32_range_rel_err")}


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
    gone: list[str] = field(default_factory=list)  # in the baseline, no longer discovered (each also a regression)

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
    """The baseline's data (schema 1 converted), or None when there is none; ValueError naming the
    file and saying how to repair it when it is broken."""
    path = Path(path)
    if not path.is_file():
        return None
    repair = "rewrite it with --tflite-baseline-update"
    try:
        text = path.read_text(encoding="utf-8")
        if _depth(text) > MAX_DEPTH:
            raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
        data = json.loads(text, parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable baseline ({type(exc).__name__}: {exc}); {repair}") from None
    problem = _structure_problem(data)
    if problem:
        raise ValueError(f"{path}: {problem}; {repair}")
    if data["schema_version"] == 1:
        data = {**data, "schema_version": SCHEMA_VERSION, "read_from_schema": 1,
                "models": {m: _from_schema_1(e) for m, e in data["models"].items()}}
    return data


def _no_constant(name: str):
    raise ValueError(f"holds {name}, which is no figure a baseline can gate on")


def _depth(text: str) -> int:
    """How deeply brackets nest, counted without parsing (outside strings)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
            continue
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _bad_value(value, kind) -> bool:
    if value is None:
        return False
    if kind in (int, float):
        return isinstance(value, bool) or not isinstance(value, NUMBERS) or not math.isfinite(value)
    return not isinstance(value, kind)


def _structure_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if data.get("schema_version") not in (1, SCHEMA_VERSION):
        return f"baseline schema {data.get('schema_version')!r} is not {SCHEMA_VERSION} (nor 1)"
    if not isinstance(data.get("models"), dict):
        return "'models' must be an object of model id -> record"
    for model_id, entry in data["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
            return f"the record of model {model_id!r} is not an object with a status"
        for key, value in entry.items():
            kind = FIELDS.get(key, float)  # schema 1's figures (drq_range_rel_err, ...) are numbers too
            if _bad_value(value, kind):
                return f"the record of model {model_id!r} has {key} = {value!r}, not a {kind.__name__}"
        for recipe, figures in (entry.get("recipes") or {}).items():
            if not isinstance(figures, dict):
                return f"the record of model {model_id!r} has recipes.{recipe} = {figures!r}, not an object"
            for key, value in figures.items():
                if _bad_value(value, RECIPE_FIELDS.get(key, float)):
                    return f"the record of model {model_id!r} has recipes.{recipe}.{key} = {value!r}, not a number"
    for key, kind in (("versions", dict), ("models_dirs", list)):
        if key in data and not isinstance(data[key], kind):
            return f"'{key}' must be a JSON {'object' if kind is dict else 'array'}"
    return None


def write(path: Path, records: dict[str, Result], versions: dict, previous: dict | None,
          discovered: set[str], models_dirs: list[str]) -> dict:
    """Models of this run replace theirs; models not run (deselected) keep their record while they exist."""
    models = {m: r for m, r in ((previous or {}).get("models", {})).items() if m in discovered}
    models.update({m: record(r) for m, r in records.items()})
    data = {"schema_version": SCHEMA_VERSION, "versions": versions, "models_dirs": models_dirs,
            "models": dict(sorted(models.items()))}
    write_json_atomic(path, data)
    return data


def _ratio(new: float, old: float) -> float:
    return new / old if old else float("inf")


def compare(baseline: dict, records: dict[str, Result], discovered: set[str], t: Thresholds) -> Verdict:
    verdict = Verdict()
    base = baseline.get("models", {})
    _batch_timing(verdict, base, records)
    for model_id in sorted(set(base) - discovered):
        verdict._add(verdict.regressions, model_id, "was in the baseline and has disappeared", "GONE")
        verdict.gone.append(model_id)
    for model_id, result in sorted(records.items()):
        new, old = record(result), base.get(model_id)
        if old is None:
            verdict._add(verdict.notes, model_id, "new model, not in the baseline yet", "new")
            continue
        verdict.labels[model_id] = "="
        if old["status"] == "passed" and new["status"] == "passed":
            _compare_figures(verdict, model_id, old, new, t, timed=not result.cache_hit)
        else:
            _compare_outcomes(verdict, model_id, old, new, result)
    return verdict


def _batch_timing(verdict: Verdict, base: dict, records: dict[str, Result]) -> None:
    """One line for the batch, over the models really converted (a cache hit took no conversion)."""
    timed = [(base[m].get("convert_seconds"), r.seconds) for m, r in records.items()
             if m in base and not r.cache_hit]
    timed = [(o, n) for o, n in timed if o and n]
    if timed:
        old_total, new_total = sum(o for o, _ in timed), sum(n for _, n in timed)
        verdict.notes.append(Change("(all)", f"{len(timed)} conversion(s) took {new_total:.1f} s, {old_total:.1f} s "
                                             f"in the baseline (x{new_total / old_total:.2f}; reported, not gated)", ""))


def _compare_outcomes(verdict: Verdict, model_id: str, old: dict, new: dict, result: Result) -> None:
    """At least one side failed: what changed is whether, or how, it fails."""
    was_ok, is_ok = old["status"] == "passed", new["status"] == "passed"
    message = result.failure.line(style="verdict") if result.failure else ""
    if was_ok:
        verdict._add(verdict.regressions, model_id, f"passed before, now {new['status']}: {message}",
                     f"PASS->{new['status'].upper()} ({new['failure_kind']})")
    elif is_ok:
        verdict._add(verdict.improvements, model_id, f"{old['status']} before ({old.get('failure_kind')}), now passes",
                     f"{old['status'].upper()}->PASS")
    elif new["failure_kind"] is None:  # a strict xfail whose model now converts
        verdict._add(verdict.improvements, model_id, "expected to fail but now converts: remove its "
                     "[expect] and update the baseline", "now converts")
    elif new["failure_signature"] != old.get("failure_signature"):
        verdict._add(verdict.regressions, model_id,
                     f"fails differently: was '{old.get('failure_message') or old.get('failure_signature')}', "
                     f"now: {message}",
                     f"new failure ({new['failure_kind']})")


def _compare_figures(verdict: Verdict, model_id: str, old: dict, new: dict, t: Thresholds, timed: bool) -> None:
    """Both passed: the TF model's error and each recipe's error and size are gated; how it converted
    and how long it took are reported."""
    figures = [("tf", "TF model", {"err": old.get("tf_err")}, {"err": new.get("tf_err")})]
    figures += [(r, RECIPES[r].title if r in RECIPES else r, old["recipes"][r], new["recipes"][r])
                for r in sorted(set(old.get("recipes") or {}) & set(new["recipes"]), key=_recipe_order)]
    for recipe, title, before, after in figures:
        o, n, factor = before.get("err"), after.get("err"), t.err_factor(recipe)
        if o is not None and n is not None:
            if n > t.err_floor and n > o * factor:
                verdict._add(verdict.regressions, model_id,
                             f"{title} error grew x{_ratio(n, o):.1f} ({o:.3g} -> {n:.3g}; gate x{factor:g} above "
                             f"{t.err_floor:g})", f"{title} error x{_ratio(n, o):.1f}")
            elif o > t.err_floor and n * factor < o:
                verdict._add(verdict.improvements, model_id, f"{title} error shrank ({o:.3g} -> {n:.3g})",
                             f"{title} error /{o / max(n, 1e-30):.1f}")
        o, n, limit = before.get("bytes"), after.get("bytes"), t.size_growth(recipe)
        if o and n:
            growth = n / o - 1
            if growth > limit:
                verdict._add(verdict.regressions, model_id, f"{title} file grew {growth:+.0%} ({o} -> {n} bytes; "
                             f"gate +{limit:.0%})", f"{title} size {growth:+.0%}")
            elif growth < -limit:
                verdict._add(verdict.improvements, model_id, f"{title} file shrank {growth:+.0%} ({o} -> {n} bytes)",
                             f"{title} size {growth:+.0%}")
    for key in ("exporter", "opset", "fixes_applied", "delivered", "onnx2tf_runs"):  # how it converts: reported
        if key in old and old.get(key) != new.get(key):
            verdict.notes.append(Change(model_id, f"{key} changed: {old.get(key)} -> {new.get(key)}", ""))
    o, n = old.get("convert_seconds"), new.get("convert_seconds")
    if timed and o and n and (n > o * TIMING_NOTE_FACTOR or n * TIMING_NOTE_FACTOR < o):
        verdict.notes.append(Change(model_id, f"conversion took {n:.1f} s, {o:.1f} s in the baseline "
                                              "(reported, not gated)", ""))


def _recipe_order(recipe: str) -> int:
    return list(RECIPES).index(recipe) if recipe in RECIPES else len(RECIPES)


GATE_PROPERTY = "baseline_gate"  # the JUnit property that marks a gate failure's test case


@dataclass(frozen=True)
class GateFailure:
    """What fails the gate, one test case each in JUnit: a model that regressed or is gone
    (`model_id`), or the baseline itself, unusable (`model_id` None). `text`: its REGRESSION lines,
    or the ERROR line, the failure's message."""

    model_id: str | None
    kind: str  # "regression", "gone", "error"
    text: str


@dataclass(frozen=True)
class GateOutcome:
    lines: tuple[Line, ...]
    labels: dict[str, str] = field(default_factory=dict)   # model -> short text for the "vs baseline" column
    marks: dict[str, Severity] = field(default_factory=dict)  # model -> its most serious change
    failed: bool = False
    gone: tuple[str, ...] = ()
    failures: tuple[GateFailure, ...] = ()

    def to_dict(self) -> dict:
        return {"lines": [{"severity": ln.severity.value, "text": ln.text} for ln in self.lines],
                "labels": dict(sorted(self.labels.items())),
                "marks": {m: v.value for m, v in sorted(self.marks.items())},
                "failed": self.failed, "gone": list(self.gone)}

    def unseen_failures(self, records: dict[str, Result]) -> list[GateFailure]:
        """The failures no test shows yet: a model whose own test failed is red already (with its
        conversion's message); one that passed, failed as expected or is gone is not."""
        return [f for f in self.failures
                if f.model_id is None or f.model_id not in records or records[f.model_id].outcome is not Outcome.FAILED]


def gate(path: Path, records: dict[str, Result], *, discovered: set[str], thresholds: Thresholds,
         versions: dict, models_dirs: list[str], update: bool) -> GateOutcome:
    """The session's verdict against the baseline file (or its rewrite, with update)."""
    try:
        previous = load(path)
    except (ValueError, OSError) as exc:
        if not update:
            error = f"ERROR: cannot use the baseline {exc}"
            return GateOutcome((Line(Severity.ERROR, error),), failed=True, failures=(GateFailure(None, "error", error),))
        previous = None  # a broken baseline is exactly what --tflite-baseline-update is for
    if update:
        if previous is not None and previous.get("models_dirs") != models_dirs:
            previous = None  # records of another models folder do not carry over
        data = write(path, records, versions, previous, discovered, models_dirs)
        return _info(f"baseline written: {path} ({len(data['models'])} models); commit it")
    if previous is None:
        return _info(f"no baseline at {path}: nothing to gate on; create it with "
                     "--tflite-baseline-update (then commit it)")
    if previous.get("models_dirs") != models_dirs:
        return _info(f"the baseline {path} was made for models in {previous.get('models_dirs')}, this "
                     f"run converts {models_dirs}: not compared; give this folder its own baseline "
                     "with --tflite-baseline FILE --tflite-baseline-update")
    verdict = compare(previous, records, discovered, thresholds)
    return GateOutcome(_verdict_lines(verdict, previous, versions, path, thresholds), dict(verdict.labels),
                       verdict.marks(), verdict.failed, tuple(verdict.gone), _failures(verdict))


def _failures(verdict: Verdict) -> tuple[GateFailure, ...]:
    """One per model, in the order of the verdict's lines, with every REGRESSION line it has."""
    texts: dict[str, list[str]] = {}
    for change in verdict.regressions:
        texts.setdefault(change.model_id, []).append(_regression_line(change))
    return tuple(GateFailure(m, "gone" if m in verdict.gone else "regression", "\n".join(t)) for m, t in texts.items())


def _regression_line(change: Change) -> str:
    return f"REGRESSION {change.model_id}: {change.what}"


def _info(text: str) -> GateOutcome:
    return GateOutcome((Line(Severity.INFO, text),))


def _verdict_lines(verdict: Verdict, previous: dict, versions: dict, path: Path, thresholds: Thresholds):
    lines = []
    if previous.get("read_from_schema"):
        lines.append(Line(Severity.NOTE, f"note: {path} is a schema-{previous['read_from_schema']} baseline, read as "
                          f"schema {SCHEMA_VERSION}; rewrite it with --tflite-baseline-update"))
    old_versions = previous.get("versions", {})
    changed = {k: (old_versions.get(k), v) for k, v in versions.items() if old_versions.get(k) != v}
    if changed:
        lines.append(Line(Severity.NOTE, "note: tool versions differ from the baseline's: "
                          + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())))
    lines += [Line(Severity.REGRESSION, _regression_line(c)) for c in verdict.regressions]
    lines += [Line(Severity.IMPROVEMENT, f"improved {c.model_id}: {c.what}") for c in verdict.improvements]
    lines += [Line(Severity.NOTE, f"note {c.model_id}: {c.what}") for c in verdict.notes]
    if verdict.improvements:
        lines.append(Line(Severity.IMPROVEMENT, "improvements: update the baseline with --tflite-baseline-update to keep them"))
    if verdict.failed:
        lines.append(Line(Severity.REGRESSION, f"{len(verdict.regressions)} regression(s) against {path} "
                                               f"(thresholds {thresholds.describe()})"))
    else:
        lines.append(Line(Severity.INFO, f"no regression against {path}"))
    return tuple(lines)
