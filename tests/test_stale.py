"""A stale or foreign file never ships as verified: each fault produced for real (a sub-package
factory edited between runs, an entry transplanted from another model, a model that ignores its
input), with real conversions."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import torch

from converter import cache
from converter.failures import FailureKind

from .test_pipeline import convert

ARCH = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return {body}

def build():
    return Net()
"""


def sub_package_model(folder: Path, body: str = "self.fc(x)", seed: int = 0) -> Path:
    """A state_dict whose factory, `pkg.arch:build`, lives in a sub-package of the model's folder."""
    package = folder / "pkg"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "arch.py").write_text(textwrap.dedent(ARCH.format(body=body)))
    namespace: dict = {}
    exec(textwrap.dedent(ARCH.format(body=body)), namespace)
    torch.manual_seed(seed)
    path = folder / "net.pt"
    torch.save(namespace["build"]().state_dict(), path)
    path.with_suffix(".toml").write_text('factory = "pkg.arch:build"\n[[inputs]]\nshape = [1, 4]\n')
    return path


def test_an_edited_sub_package_factory_is_converted_again_not_restored(tmp_path):
    model = sub_package_model(tmp_path / "m")
    first = convert(tmp_path, model)
    assert first.passed and not first.cache_hit, first.failure
    shipped = (tmp_path / "out" / "net.tflite").read_bytes()
    assert convert(tmp_path, model).cache_hit  # unchanged: restored (the check below is not blind)
    arch = tmp_path / "m" / "pkg" / "arch.py"
    arch.write_text(arch.read_text().replace("return self.fc(x)", "return self.fc(x) * 3.0 + 1.0"))
    edited = convert(tmp_path, model)
    assert edited.passed and not edited.cache_hit, "the old conversion was restored for an edited factory"
    assert (tmp_path / "out" / "net.tflite").read_bytes() != shipped


def test_an_entry_transplanted_from_another_model_is_not_restored(tmp_path):
    folder = tmp_path / "m"
    mine = sub_package_model(folder)
    other_folder = tmp_path / "other"
    other = sub_package_model(other_folder, seed=1)  # the same architecture, other weights
    assert convert(tmp_path, other).passed
    theirs = {p.name: p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
    assert convert(tmp_path, mine).passed
    (mine_key,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".") and p.name not in theirs]
    (their_entry,) = theirs.values()
    # another user (or a careless copy) puts the other model's whole entry under this model's key
    shutil.rmtree(mine_key)
    shutil.copytree(their_entry, mine_key)
    manifest = json.loads((mine_key / cache.MANIFEST).read_text())
    (mine_key / cache.MANIFEST).write_text(json.dumps({**manifest, "key": mine_key.name}))
    (tmp_path / "out" / "net.tflite").unlink()
    again = convert(tmp_path, mine)
    assert again.passed and not again.cache_hit, "another model's entry was restored as this model's"
    assert again.model_sha256 == cache.file_digest(mine)
    assert (tmp_path / "out" / "net.tflite").read_bytes() != (their_entry / "model_drq.tflite").read_bytes()


def test_fail_on_vacuous_holds_on_a_cache_hit_and_a_cached_refusal_binds_no_run_without_it(tmp_path):
    model = sub_package_model(tmp_path / "m", body="self.fc(x * 0.0)")  # its output ignores its input
    lenient = convert(tmp_path, model)
    assert lenient.passed and lenient.caveats, lenient.failure
    strict = convert(tmp_path, model, fail_on_vacuous="1")
    assert strict.failure is not None and strict.failure.kind is FailureKind.VACUOUS_CHECK
    assert not (tmp_path / "out" / "net.tflite").exists()
    assert convert(tmp_path, model, fail_on_vacuous="1").failure.kind is FailureKind.VACUOUS_CHECK  # its own hit
    again = convert(tmp_path, model)
    assert again.passed and again.cache_hit
