"""What the conversion cache keys on (cache.py); restoring entries is proven on real ones in tests/e2e."""
from __future__ import annotations

from converter.cache import code_digests
from converter.output_folders import LOCK_NAME

from ..support import write


def test_the_code_key_covers_sub_packages_and_passes_over_a_runs_outputs(tmp_path):
    write(tmp_path / "pkg" / "__init__.py")
    write(tmp_path / "pkg" / "arch.py", "def build(): ...\n")
    write(tmp_path / "pkg" / "__pycache__" / "arch.cpython-311.py", "bytecode's neighbour\n")
    write(tmp_path / "reports" / LOCK_NAME)  # a run's reports folder, a conversion running in it
    write(tmp_path / "reports" / "artifacts" / "net" / "tmp" / "__autograph_generated_file1.py", "x = 1\n")
    write(tmp_path / "venv" / "pyvenv.cfg")
    write(tmp_path / "venv" / "lib" / "mod.py")
    before = code_digests(tmp_path)
    assert sorted(before) == ["pkg/__init__.py", "pkg/arch.py"]
    write(tmp_path / "reports" / "artifacts" / "other" / "tmp" / "__autograph_generated_file2.py", "y = 2\n")
    assert code_digests(tmp_path) == before  # another conversion's scratch files change nothing
    write(tmp_path / "pkg" / "arch.py", "def build(): return 3\n")
    assert code_digests(tmp_path)["pkg/arch.py"] != before["pkg/arch.py"]  # an edit does


def test_the_key_covers_the_declared_tasks_and_the_verification_inputs(tmp_path):
    """Both change what a record says: the verification inputs its figures are over, and the task its
    runtime check judged the reference kernels' outputs by (a restore does not run them again)."""
    from converter.cache import key
    from converter.spec import ModelSpec

    plain = ModelSpec(model_id="m", path=str(tmp_path / "m.pt"))
    keys = {key(s, "digest") for s in (
        plain, ModelSpec(model_id="m", path=plain.path, task={"task": "classification"}),
        ModelSpec(model_id="m", path=plain.path, outputs={"y": {"task": "embedding"}}),
        ModelSpec(model_id="m", path=plain.path, verify_samples=3))}
    assert len(keys) == 4
    assert key(ModelSpec(model_id="m", path=plain.path, tolerance={"drq": 0.2}), "digest") == key(plain, "digest")
