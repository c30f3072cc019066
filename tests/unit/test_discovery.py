"""Model files to cases: sorted ids, unique ids, and the folders and file names they get (discovery.py, settings.file_name)."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from converter.discovery import assign_ids, discover
from converter.settings import file_name, resolve

from ..support import write


def test_ids_are_sorted_names_and_paths_on_collision(tmp_path):
    for rel in ("b/net.pt", "a/net.pt", "solo.pt2", "c/x.txt", ".hidden/h.pt"):
        write(tmp_path / rel)
    write(tmp_path / "models.toml", "[[inputs]]\nshape = [1, 4]\n")
    cases = discover([tmp_path])
    assert [c.model_id for c in cases] == ["a/net", "b/net", "solo"]
    # the same relative path under two roots is prefixed by the root's name
    ids = assign_ids([(tmp_path / "r1" / "m.pt", tmp_path / "r1"), (tmp_path / "r2" / "m.pt", tmp_path / "r2")])
    assert ids == ["r1/m", "r2/m"]


def test_ids_stay_unique_when_names_collide(tmp_path):
    for rel in ("a/models/x.pt", "b/models/x.pt", "c/net.pt", "c/net.pt2", "c/sub/net.pt"):
        write(tmp_path / rel)
    roots = [tmp_path / "a" / "models", tmp_path / "b" / "models", tmp_path / "c", tmp_path / "c"]
    cases = discover(roots, input_shapes=["1,4"])
    ids = [c.model_id for c in cases]
    assert len(ids) == len(set(ids)) == 5  # the repeated folder is read once
    assert set(ids) == {"a/models/x", "b/models/x", "net.pt", "net.pt2", "sub/net"}


def test_artifact_folders_of_nested_ids_never_contain_each_other(tmp_path):
    s = resolve({}, {}, {}, base=tmp_path)
    assert s.artifacts_for("a") not in s.artifacts_for("a/net").parents
    assert s.deliverable_for("a/net") == tmp_path / "tflite_models" / "a" / "net.tflite"


def test_ids_that_looked_alike_get_their_own_folders_and_files(tmp_path):
    s = resolve({}, {}, {}, base=tmp_path)
    ids = [".", "..", "a/b", "a__b", "a%2Fb", "a", "%2E", ".hidden"]
    folders = [s.artifacts_for(i) for i in ids]
    files = [s.deliverable_for(i) for i in ids]
    assert len(set(folders)) == len(ids) and len(set(files)) == len(ids)
    for folder in folders:
        assert folder.parent == s.artifacts_dir and not folder.name.startswith(".")
    for path in files:
        assert s.tflite_dir in path.parents and not path.name.startswith(".")
    assert s.deliverable_for("a/b") == s.tflite_dir / "a" / "b.tflite"


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_file_names_are_injective_and_inert(a, b):
    assert (file_name(a) == file_name(b)) == (a == b)
    assert "/" not in file_name(a) and not file_name(a).startswith(".")


def test_ids_too_long_for_a_file_name_keep_their_start_and_stay_apart():
    long = "模型" * 20  # 120 bytes on disk, 360 once percent-encoded
    names = {file_name(long), file_name(long + "x"), file_name(long[:-1])}
    assert len(names) == 3 and all(len(n) <= 200 for n in names)
    assert file_name(long).startswith(file_name("模型" * 5))


def test_ids_differing_only_in_case_do_not_share_a_file(tmp_path):
    from converter.discovery import discover

    write(tmp_path / "x" / "Net.pt")
    write(tmp_path / "y" / "net.pt")
    ids = sorted(c.model_id for c in discover([tmp_path], input_shapes=["1,4"]))
    assert ids == ["x/Net", "y/net"]
