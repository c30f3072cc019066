"""A content-addressed cache of conversions: an unchanged model is not converted again.

The key covers what a conversion depends on: the bytes the conversion child loaded (it reports
their digest, so a file replaced while its run waited is cached under its new bytes), the code
in the model's folder and its sub-packages, and in the folders it may import from besides (PYTHONPATH,
the project root), that a factory or a trusted pickle runs, the spec less
its tolerances, --tflite-fail-on-vacuous, the harness's conversion code (converter/stages/ and the files
both sides share) and the tool versions. A restored record must have been made from the bytes being
tested (its model digest), or another model's entry copied under this key would pass as this one.
Not the thread count, the memory ceiling, the tolerances or the report code: none changes what is
converted. So a restored entry is judged again, in this process, against today's tolerances: its
TFLite files are loaded with the TFLite runtime, their signatures (what the device sees: names, shapes,
layouts, dtypes, quantization) checked against the record, run
on the entry's sample inputs and compared with its PyTorch outputs; the figures must be the ones the
record holds (an entry whose files were swapped, even with a rewritten manifest, is not), and the
verdict is taken again from them. An entry that does not hold up is deleted and the model converted.

The cache folder must be this user's and writable by no one else (as the machine's slot folder):
otherwise anyone could plant an entry. Failures that may be the machine's (kinds with `cached`
false: a timeout, running out of memory, a crash, a full disk) are not cached.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np

from .environment import tool_versions
from .output_folders import LOCK_NAME
from .protocol import LOG_FILE, RESULT_FILE, SAMPLES_FILE, SampleArrays, write_bytes_atomic
from .results import Result
from .tflite_run import stacked
from .verdict import judge

HARNESS_ROOT = Path(__file__).resolve().parent
# the code that decides what a conversion produces (not the reports, the CLI or the plugin)
CONVERSION_CODE = ("stages/*.py", "protocol.py", "results.py", "spec.py", "recipes.py", "failures.py", "metrics.py",
                   "tflite_run.py", "verdict.py", "signature.py")
MANIFEST = "manifest.json"
CHUNK = 2**20
FIGURE_SLACK = 1e-3  # a restored file's error may differ from its record by this share (thread counts)


class CacheUnusable(Exception):
    """The cache folder cannot be trusted or written: the run goes on without it, and says so."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file, read in chunks (a 4 GB model never sits in memory); None for what is not
    a regular file (a FIFO would block, a device never end) or cannot be read (EIO, /proc/self/mem):
    the child refuses those in one line, uncached."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


SKIPPED_FOLDERS = ("__pycache__", "site-packages", "dist-packages", "node_modules")  # bytecode, installed packages


def code_digests(folder: Path) -> dict[str, str | None]:
    """Every .py file under the model's folder, sub-packages included (a factory `pkg.arch:build`
    lives in `pkg/`, and imports what it likes beside it), by its path relative to the folder.
    Links are not followed, hidden folders and bytecode caches skipped: what the factory imports
    from the folder is there. So are a run's output folders (they hold its lock file): TensorFlow
    leaves a __autograph_generated_file*.py per function in a running conversion's artifacts, which
    would change the key of every model keyed while it runs."""
    found = {}
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f not in SKIPPED_FOLDERS
                            and not os.path.exists(os.path.join(root, f, "pyvenv.cfg"))  # a virtual environment
                            and not os.path.exists(os.path.join(root, f, LOCK_NAME)))  # a run's reports
        for name in sorted(files):
            if name.endswith(".py"):
                path = Path(root) / name
                found[path.relative_to(folder).as_posix()] = file_digest(path)
    return found


@functools.lru_cache(maxsize=1)  # the source does not change during a run: read it once, not per model
def _conversion_code() -> str:
    files = sorted({p for pattern in CONVERSION_CODE for p in HARNESS_ROOT.glob(pattern)})
    return _sha256(b"".join(p.relative_to(HARNESS_ROOT).as_posix().encode() + p.read_bytes() for p in files))


# how outputs are judged, not what is converted: a restore judges again (not channel_axis: an axis the
# output lacks is a spec_error found while verifying, which must not outlive the sidecar's fix)
# a task is keyed although the verdict reads it: the record's runtime check judged the reference kernels'
# outputs by it, and a restore does not run them again
UNKEYED = ("model_id", "path", "sources", "tolerance", "output_tolerance", "timeout", "memory_limit_mb", "expect")


def _installed(folder: Path) -> bool:
    """Inside the interpreter's own library or an installed-packages folder: versioned, not the user's code."""
    import sysconfig

    places = {Path(sysconfig.get_path(name)).resolve() for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(folder == p or p in folder.parents for p in places) or \
        any(part in ("site-packages", "dist-packages") for part in folder.parts)


@functools.lru_cache(maxsize=8)  # the folders' code does not change during a run: walked once per process
def _importable_code(folders: tuple[str, ...]) -> str:
    return _sha256(json.dumps({f: code_digests(Path(f)) for f in folders}, sort_keys=True).encode())


def importable_folders() -> tuple[str, ...]:
    """Where a child imports a factory's modules from besides the model's folder: PYTHONPATH and the
    folder it runs in (the harness's project root), less installed packages (their versions are theirs)."""
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e] + [str(HARNESS_ROOT.parent)]
    folders = {Path(e).resolve() for e in entries if Path(e).is_dir()}
    return tuple(sorted(str(f) for f in folders if not _installed(f)))


def key(spec, model_digest: str, *, fail_on_vacuous: bool = False, engine_tools: dict | None = None) -> str:
    """`fail_on_vacuous` decides the verdict on a model whose check proves little: an entry made
    without it must not pass such a model under it, nor one made with it fail it without.
    `engine_tools`: the versions of another engine's environment that may convert it (litert)."""
    model = Path(spec.path)
    code = {}
    if spec.factory or spec.trust_pickle:  # the model is also the code it imports from its folder
        # and what it imports from elsewhere: a package on PYTHONPATH edited between runs is another model
        code = {**code_digests(model.parent), "<importable>": _importable_code(importable_folders())}
    described = {k: v for k, v in spec.to_dict().items() if k not in UNKEYED}
    samples = {}
    if spec.calibration:  # the samples calibrate and verify: other samples, another conversion
        folder = Path(spec.calibration)
        samples = {p.name: file_digest(p) for p in sorted(folder.glob("*.np[yz]"))} if folder.is_dir() else {}
    material = {"model": model_digest, "code": code, "spec": described, "harness": _conversion_code(),
                "tools": tool_versions(), "samples": samples, "fail_on_vacuous": bool(fail_on_vacuous)}
    if engine_tools:
        material["engine_tools"] = engine_tools
    return _sha256(json.dumps(material, sort_keys=True, default=str).encode())


def check_folder(cache_dir: Path) -> None:
    """The cache folder is this user's and no one else can write it (created so if missing)."""
    folder = Path(cache_dir)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
        with tempfile.TemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise CacheUnusable(f"cache folder {folder} cannot be written ({exc.strerror or exc})") from None
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheUnusable(f"cache folder {folder} belongs to another user (uid {info.st_uid}): its entries "
                            "could be anyone's")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheUnusable(f"cache folder {folder} can be written by others (mode {stat.S_IMODE(info.st_mode):o}): "
                            f"anyone could plant an entry; chmod go-w {folder} to use it")


def usable(settings):
    """The settings to run with, and why the cache is off when its folder cannot be trusted or written
    (checked before the first conversion: a read-only cache must not fail a model after the fact)."""
    if settings.cache_dir is None:
        return settings, None
    try:
        check_folder(settings.cache_dir)
    except CacheUnusable as exc:
        return dataclasses.replace(settings, cache_dir=None), f"{exc}: converting without the cache"
    return settings, None


OFF_FOR_WORKERS = "tflite_harness_cache_off"  # the controller's decision, in each xdist worker's workerinput


def tell_worker(workerinput: dict, settings) -> None:
    """The controller's decision for a worker it starts: xdist workers parse the command line again,
    so a cache the controller refused would be back on in each of them."""
    workerinput[OFF_FOR_WORKERS] = settings.cache_dir is None


def as_told(settings, workerinput: dict | None):
    """A worker's settings with the controller's decision applied (no cache if it refused one)."""
    if workerinput and workerinput.get(OFF_FOR_WORKERS):
        return dataclasses.replace(settings, cache_dir=None)
    return settings


def _drop(entry: Path) -> None:
    shutil.rmtree(entry, ignore_errors=True)


def restore(cache_dir: Path, entry_key: str, artifacts: Path, spec, *, model_digest: str,
            threads: int = 1) -> Result | None:
    """The cached result, proven and judged again against today's spec, its TFLite files copied into
    `artifacts`; None on a miss or an entry that does not hold up (which is then deleted).
    `model_digest`: of the file being tested; the record must have been made from those bytes (an
    entry copied from another model's folder, its manifest's key rewritten, is not this model's)."""
    entry = Path(cache_dir) / entry_key
    if not entry.is_dir():
        return None
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("key") != entry_key or not isinstance(manifest.get("files"), dict):
            raise ValueError("the manifest is not this entry's")
        contents = {name: (entry / name).read_bytes() for name in manifest["files"]}
        if any(_sha256(data) != manifest["files"][name] for name, data in contents.items()):
            raise ValueError("a file does not match the manifest")
        stored = Result.from_dict(json.loads(contents[RESULT_FILE]))
        converted = stored.model_sha256 or (stored.load.model_sha256 if stored.load else "")
        if converted != model_digest:
            raise ValueError(f"its record was made from another model file (SHA-256 {converted[:12] or 'unknown'}, "
                             f"this one is {model_digest[:12]})")
        # none for a model refused before it ran (an untrusted pickle); read from the bytes just proven
        samples = SampleArrays.load(io.BytesIO(contents[SAMPLES_FILE])) if SAMPLES_FILE in contents else SampleArrays()
        result = _judged_again(stored, contents, samples, spec, threads)
    except Exception as exc:  # corrupt, truncated, tampered with, planted: rebuilt, never trusted
        print(f"--- cache entry {entry.name} is not used ({type(exc).__name__}: {exc}); converting again")
        _drop(entry)
        return None
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    for name, data in contents.items():
        if name.endswith(".tflite") or name == LOG_FILE:
            write_bytes_atomic(artifacts / name, data)
    result = dataclasses.replace(
        result, model_id=spec.model_id, model_path=spec.path, cache_hit=True, deliverable=None,
        deliverables=tuple(dataclasses.replace(d, path=str(artifacts / Path(d.path).name)) for d in result.deliverables))
    result.write(artifacts / RESULT_FILE)
    return result


def _judged_again(stored: Result, contents: dict, samples: SampleArrays, spec, threads: int) -> Result:
    """The stored record, proven by its own files and judged against today's tolerances."""
    from .metrics import compare, judge_outputs
    from .recipes import RECIPES

    if stored.failure is not None and not stored.failure.kind.rejudged and not stored.deliverables:
        return stored  # a failure before any TFLite file: nothing to run, nothing tolerances change
    if not (samples.inputs and samples.reference):
        raise ValueError("the entry holds no sample inputs to prove its files with")
    reference = samples.reference
    saved, export, signature = stored.savedmodel, stored.export, stored.signature

    def again(comparisons, candidates, recipe):
        out = []
        for i, old in enumerate(comparisons):
            candidate = candidates[i] if i < len(candidates) else None
            if candidate is None:
                out.append(dataclasses.replace(old, tolerance=spec.tolerance_for(recipe, old.name)))
                continue
            out.append(compare(old.name, reference[i], candidate, spec.tolerance_for(recipe, old.name)))
        return tuple(out)

    if export is not None:
        export = dataclasses.replace(export, outputs=again(export.outputs, samples.onnx, "onnx"))
    if saved is not None:
        saved = dataclasses.replace(saved, outputs=again(saved.outputs, samples.tf, "fp32"))
    sets = samples.sets
    verified_on = stacked([ref for _, ref in sets])
    deliverables = []
    for d in stored.deliverables:
        if not d.verified:  # a file the runtime could not run: its record says why, nothing is delivered from it
            deliverables.append(d)
            continue
        name = Path(d.path).name
        if d.recipe not in RECIPES or name not in contents:
            raise ValueError(f"the entry lacks its {d.recipe} file")
        _same_signature(contents[name], d, signature)
        outputs = stacked(_run(contents[name], signature, [arrays for arrays, _ in sets], threads))
        fresh = judge_outputs(spec, d.recipe, [old.name for old in d.outputs], verified_on, outputs, samples=len(sets))
        for old, new in zip(d.outputs, fresh):
            if not _same_figure(old.range_rel_err, new.range_rel_err):
                raise ValueError(f"its {d.label} file gives range-relative error {new.range_rel_err:.3g} where the "
                                 f"record says {old.range_rel_err:.3g}: not the file that was verified")
        deliverables.append(dataclasses.replace(d, outputs=fresh))  # its runtime check stays the record's
    return judge(dataclasses.replace(stored, export=export, savedmodel=saved, deliverables=tuple(deliverables)), spec)


def _same_figure(old: float, new: float) -> bool:
    if not (np.isfinite(old) and np.isfinite(new)):
        return bool(np.isnan(old) and np.isnan(new)) or old == new
    return abs(old - new) <= FIGURE_SLACK * max(abs(old), 1e-6)


def _same_signature(model: bytes, d, saved) -> None:
    """The restored file declares the inputs and outputs its record reports (what the device sees)."""
    from . import signature
    from .tflite_run import interpreter

    if d.signature is None:
        return
    found = signature.read(interpreter(model), signature.layouts(saved))
    if found != d.signature:
        raise ValueError(f"its {d.label} file declares {found.describe()} where the record says "
                         f"{d.signature.describe()}")


def _run(model: bytes, saved, sets, threads: int) -> list[list[np.ndarray]]:
    """A TFLite file on each set of sample inputs (loaded once), its outputs in PyTorch's layout;
    ValueError where its inputs or outputs are not the record's."""
    from .tflite_run import run_sets, torch_layout

    return [torch_layout(outputs, saved.output_perms) for outputs in run_sets(model, saved, sets, threads)]


def store(cache_dir: Path, entry_key: str, result: Result, artifacts: Path) -> None:
    if result.failure and not result.failure.kind.cached:
        return
    contents = {RESULT_FILE: json.dumps(dataclasses.replace(result, deliverable=None).to_dict()).encode()}
    for d in result.deliverables:
        if Path(d.path).is_file():
            contents[Path(d.path).name] = Path(d.path).read_bytes()
    samples = artifacts / SAMPLES_FILE
    if samples.is_file():
        contents[SAMPLES_FILE] = samples.read_bytes()
    log = artifacts / LOG_FILE
    if result.failure and log.is_file():  # the failure's message names its log: a restored failure brings it back
        contents[LOG_FILE] = log.read_bytes()
    cache_dir = Path(cache_dir)
    staging = None
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".staging-"))
        for name, data in contents.items():
            (staging / name).write_bytes(data)
        (staging / MANIFEST).write_text(json.dumps({"key": entry_key,
                                                    "files": {n: _sha256(d) for n, d in contents.items()}},
                                                   sort_keys=True))
        _drop(cache_dir / entry_key)
        os.replace(staging, cache_dir / entry_key)  # whole entries only: a reader never sees half of one
    except OSError as exc:  # a full or read-only cache disk costs the cache, never the model's result
        print(f"--- could not keep the conversion in the cache ({exc.strerror or exc})")
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
