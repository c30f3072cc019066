"""Model files -> cases: sorted, with stable ids (the model's name, path-relative on collision).

Every pytest-xdist worker collects independently, so the order and ids must come out the
same everywhere: everything here is sorted and derived from relative paths only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .failures import FailureKind
from .spec import ModelSpec, SpecError, defaults_layer, load_spec

MODEL_SUFFIXES = (".pt", ".pth", ".pt2")


@dataclass(frozen=True)
class Case:
    model_id: str
    path: Path
    root: Path
    spec: ModelSpec | None
    spec_error: str | None = None
    error_kind: FailureKind = FailureKind.SPEC_ERROR  # what spec_error is


MAX_DEPTH = 100  # folders below a models folder searched: pytest collects a tree deeper than ~150 with a RecursionError


def beyond_depth(path: Path, roots) -> bool:
    """`path` is deeper below one of the models folders than discovery searches (and pytest must not
    collect it either)."""
    path = _absolute(path)
    for root in map(_absolute, roots):
        if root in path.parents and len(path.relative_to(root).parts) > MAX_DEPTH:
            return True
    return False


def too_deep_note(roots) -> str | None:
    """One line saying which models folder holds folders deeper than MAX_DEPTH (not searched)."""
    deep = [str(r) for r in roots if Path(r).is_dir() and _deepest(Path(r)) > MAX_DEPTH]
    if not deep:
        return None
    return (f"folders more than {MAX_DEPTH} levels below {', '.join(deep)} are not searched for models (pytest "
            "cannot collect a tree that deep)")


def _deepest(root: Path) -> int:
    deepest, stack = 0, [(root, 0)]
    while stack and deepest <= MAX_DEPTH:
        folder, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((Path(e.path), depth + 1) for e in _entries(folder) if not e.name.startswith(".") and _is_folder(e))
    return deepest


def _entries(folder: Path) -> list:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _is_folder(entry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def find_model_files(root: Path) -> list[Path]:
    """Every entry named like a model (a symbolic link too, dangling or leading out of the folder,
    as git-annex and DVC store models; a FIFO or a device too: it fails alone, saying what it is,
    instead of vanishing from the batch). Folders are searched, not taken, down to MAX_DEPTH."""
    root = Path(root)
    if root.is_file():
        return [root]
    found = []
    # a stack, not recursion (a chain of 1100 folders exceeds Python's recursion limit); links to
    # folders are not followed; a folder that cannot be listed (gone meanwhile, as /proc/<pid>
    # goes, or unreadable) holds nothing this run can convert, and is passed over
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        for entry in _entries(folder):
            if entry.name.startswith("."):
                continue
            if _is_folder(entry):
                if depth < MAX_DEPTH:
                    stack.append((Path(entry.path), depth + 1))
            elif Path(entry.name).suffix in MODEL_SUFFIXES:
                found.append(Path(entry.path))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _absolute(path: Path) -> Path:
    """Where a path is, without following symbolic links (a model stored as a link to a blob
    outside the folder keeps its place in it)."""
    return Path(os.path.abspath(path))


def assign_ids(entries: list[tuple[Path, Path]]) -> list[str]:
    """Unique ids, as short as possible: the stem; else the path relative to its models folder
    (without, then with its suffix); else relative to the common parent of all folders."""
    if not entries:
        return []
    roots = [_absolute(r) for _, r in entries]
    common = Path(os.path.commonpath([str(r if r.is_dir() else r.parent) for r in roots]))

    def rel(path: Path, root: Path) -> Path:
        return _absolute(path).relative_to(_absolute(root)) if root.is_dir() else Path(path.name)

    levels = (lambda p, r: p.stem,
              lambda p, r: rel(p, r).with_suffix("").as_posix(),
              lambda p, r: rel(p, r).as_posix(),
              lambda p, r: _absolute(p).relative_to(common).with_suffix("").as_posix(),
              lambda p, r: _absolute(p).relative_to(common).as_posix())
    ids: list[str | None] = [None] * len(entries)
    taken: set[str] = set()
    for level in levels:
        candidates = [level(p, r) for p, r in entries]
        # compared case-folded: on macOS and Windows 'Net' and 'net' would share one deliverable
        folded = [c.casefold() for c in candidates]
        for i, candidate in enumerate(candidates):
            if ids[i] is None and folded.count(folded[i]) == 1 and folded[i] not in taken:
                ids[i] = candidate
                taken.add(folded[i])
    return [i if i is not None else f"{c}~{n}" for n, (i, c) in enumerate(zip(ids, candidates))]


def discover(roots, *, input_shapes=(), timeout=None, deliverables=None, engine=None, verify_samples=None) -> list[Case]:
    entries, seen = [], set()
    for root in roots:
        root = Path(root)
        for path in find_model_files(root):
            if _absolute(path) not in seen:  # overlapping or repeated folders
                seen.add(_absolute(path))
                entries.append((path, root))
    defaults = defaults_layer(input_shapes, timeout=timeout, deliverables=deliverables, engine=engine,
                              verify_samples=verify_samples)
    cases = []
    for (path, root), model_id in zip(entries, assign_ids(entries)):
        try:
            spec = load_spec(path, model_id, root=root if root.is_dir() else None, defaults=defaults)
            cases.append(Case(model_id, path, root, spec))
        except SpecError as exc:
            cases.append(Case(model_id, path, root, None, str(exc)))
    return sorted(cases, key=lambda c: c.model_id)
