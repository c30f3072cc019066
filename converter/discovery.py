"""Model files -> cases: sorted, with stable ids (the model's name, path-relative on collision).

Every pytest-xdist worker collects independently, so the order and ids must come out the
same everywhere: everything here is sorted and derived from relative paths only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .spec import ModelSpec, SpecError, defaults_layer, load_spec

MODEL_SUFFIXES = (".pt", ".pth", ".pt2")


@dataclass(frozen=True)
class Case:
    model_id: str
    path: Path
    root: Path
    spec: ModelSpec | None
    spec_error: str | None = None


def find_model_files(root: Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    found = [p for p in root.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def assign_ids(entries: list[tuple[Path, Path]]) -> list[str]:
    """Stem where unique; the path relative to its models folder (without suffix) otherwise."""
    stems = [p.stem for p, _ in entries]
    ids = []
    for (path, root), stem in zip(entries, stems):
        if stems.count(stem) == 1:
            ids.append(stem)
        else:
            rel = path.relative_to(root) if root.is_dir() else Path(path.name)
            ids.append(rel.with_suffix("").as_posix())
    # the same relative path in two different folders: prefix the folder's name
    return [f"{root.name}/{i}" if ids.count(i) > 1 else i for i, (_, root) in zip(ids, entries)]


def discover(roots, *, input_shapes=(), timeout=None) -> list[Case]:
    entries = []
    for root in roots:
        root = Path(root)
        entries += [(p, root) for p in find_model_files(root)]
    defaults = defaults_layer(input_shapes, timeout=timeout)
    cases = []
    for (path, root), model_id in zip(entries, assign_ids(entries)):
        try:
            spec = load_spec(path, model_id, root=root if root.is_dir() else None, defaults=defaults)
            cases.append(Case(model_id, path, root, spec))
        except SpecError as exc:
            cases.append(Case(model_id, path, root, None, str(exc)))
    return sorted(cases, key=lambda c: c.model_id)
