"""The filesystem layer on a local disk and on TensorFlow's ``ram://`` (through Beam's
``FileSystems``, as every non-local root): the same calls give the same answers on both."""
import importlib.util
import os
import uuid

import pytest

from ganpipe.infra import storage


@pytest.fixture(params=["local", "ram"])
def base(request, tmp_path):
    return str(tmp_path) if request.param == "local" else f"ram://storage-{uuid.uuid4().hex}"


def tree(base, files):
    for relative, data in files.items():
        storage.write_bytes(storage.join(base, relative), data)


def test_written_files_read_back_and_list_sorted_by_name_on_any_root(base):
    tree(base, {"b/y.bin": b"yy", "a.txt": b"x", "b/c/z": b"zzz"})
    assert storage.read_bytes(storage.join(base, "b", "y.bin")) == b"yy"
    assert storage.listdir(base) == ["a.txt", "b"]
    assert storage.listdir(storage.join(base, "b")) == ["c", "y.bin"]
    assert storage.listdir(storage.join(base, "absent")) == []
    walked = [(storage.normalize(d)[len(storage.normalize(base)):], sub, files) for d, sub, files in storage.walk(base)]
    assert walked == [("", ["b"], ["a.txt"]), ("/b", ["c"], ["y.bin"]), ("/b/c", [], ["z"])]
    assert [p[len(base):] for p in storage.glob(storage.join(base, "b", "**"))] == ["/b/c/z", "/b/y.bin"]


def test_walk_visits_subdirectories_in_name_order_whatever_the_directory_order(base):
    names = ["q", "d", "x", "a", "m", "k", "z", "b"]  # created out of order: a local listing keeps no order
    tree(base, {f"{name}/f": b"" for name in names})
    top = next(iter(storage.walk(base)))
    assert top[1] == sorted(names)
    assert [d.rstrip("/").rsplit("/", 1)[-1] for d, _, _ in storage.walk(base)][1:] == sorted(names)


def test_a_rewritten_file_holds_only_the_new_bytes_and_json_is_sorted(base):
    target = storage.join(base, "v.json")
    storage.write_bytes(target, b"a much longer first version")
    storage.write_json(target, {"b": 1, "a": [2]})
    assert storage.read_bytes(target).decode() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'
    assert storage.read_json(target) == {"a": [2], "b": 1}


def test_sizes_and_times_of_files_and_trees_and_of_nothing(base):
    tree(base, {"d/one": b"1", "d/sub/two": b"22"})
    assert storage.size(storage.join(base, "d", "one")) == 1
    assert storage.size(storage.join(base, "d")) == 3
    assert storage.size(storage.join(base, "nothing")) == 0
    assert storage.modified(storage.join(base, "nothing")) == 0.0
    if storage.is_local(base):  # TensorFlow's ram:// keeps no modification times
        assert storage.modified(storage.join(base, "d", "sub")) > 1e9


def test_existence_of_files_and_directories(base):
    tree(base, {"d/f": b"x"})
    assert storage.exists(storage.join(base, "d", "f")) and not storage.exists(storage.join(base, "e"))
    assert storage.directory_exists(storage.join(base, "d"))
    assert not storage.directory_exists(storage.join(base, "e"))
    storage.makedirs(storage.join(base, "made", "deep"))
    storage.makedirs(storage.join(base, "made", "deep"))  # again: no error
    assert storage.exists(storage.join(base, "made", "deep"))


def test_copy_and_move_trees_and_delete_leave_exactly_what_they_should(base):
    tree(base, {"src/a": b"1", "src/sub/b": b"2", "src/DONE": b"ok"})
    storage.copy_tree(storage.join(base, "src"), storage.join(base, "copy"))
    assert storage.read_bytes(storage.join(base, "copy", "sub", "b")) == b"2"
    storage.move_tree(storage.join(base, "src"), storage.join(base, "moved"), commit_last="DONE")
    assert not storage.directory_exists(storage.join(base, "src"))
    assert [storage.read_bytes(storage.join(base, "moved", name)) for name in ("a", "sub/b", "DONE")] == [b"1", b"2", b"ok"]
    with pytest.raises(FileExistsError):
        storage.move_tree(storage.join(base, "copy"), storage.join(base, "moved"))
    storage.delete([storage.join(base, "moved"), storage.join(base, "copy", "a"), storage.join(base, "absent")])
    assert not storage.directory_exists(storage.join(base, "moved"))
    assert storage.listdir(storage.join(base, "copy")) == ["DONE", "sub"]


def test_open_file_refuses_modes_other_than_whole_file_read_and_write(base):
    with pytest.raises(ValueError, match="mode 'a'"):
        storage.open_file(storage.join(base, "x"), "a")


def test_local_links_count_as_themselves_and_are_copied_as_links(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data").write_bytes(b"x" * 100)
    os.symlink(str(tmp_path / "d" / "data"), tmp_path / "d" / "link")
    os.symlink(str(tmp_path / "d"), tmp_path / "dirlink")
    link_size = os.lstat(tmp_path / "d" / "link").st_size
    assert storage.size(str(tmp_path / "d")) == 100 + link_size
    assert storage.size(str(tmp_path / "dirlink")) == os.lstat(tmp_path / "dirlink").st_size
    assert storage.link_target(str(tmp_path / "d" / "link")) == str(tmp_path / "d" / "data")
    assert storage.link_target(str(tmp_path / "d" / "data")) is None
    storage.copy_tree(str(tmp_path / "d"), str(tmp_path / "copy"))
    assert os.readlink(tmp_path / "copy" / "link") == str(tmp_path / "d" / "data")
    storage.delete([str(tmp_path / "dirlink")])  # the link goes, not what it points to
    assert not os.path.lexists(tmp_path / "dirlink") and (tmp_path / "d" / "data").exists()


def test_paths_and_uris_are_joined_resolved_and_normalized_per_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage.scheme("GS://b/p") == "gs" and storage.scheme("/a/b") is None
    assert storage.is_local("file:///a") and not storage.is_local("ram://a")
    assert storage.join("ram://b", "x", "y") == "ram://b/x/y"
    assert storage.dirname("ram://b/x/") == "ram://b" and storage.dirname("/a/b") == "/a"
    assert storage.resolve("/base", "rel") == "/base/rel"
    assert storage.resolve("/base", "/abs") == "/abs" and storage.resolve("/base", "ram://x") == "ram://x"
    assert storage.normalize("ram://b/x/") == "ram://b/x"
    assert storage.normalize("file://rel") == str(tmp_path / "rel")
    assert storage.normalize_root("ram://b/") == "ram://b"


@pytest.mark.skipif(importlib.util.find_spec("hdfs") is not None, reason="the hdfs package serves hdfs:// here")
def test_an_unsupported_scheme_names_what_would_serve_it():
    with pytest.raises(storage.UnsupportedScheme, match=r"hdfs://.*install apache-beam with the hdfs package"):
        storage.check_supported("hdfs://namenode/root")  # Beam knows the scheme, its package is missing
    with pytest.raises(storage.UnsupportedScheme, match="no known Beam or TensorFlow filesystem serves it"):
        storage.normalize_root("nosuch://bucket/root")


def test_local_trees_are_fsynced_file_by_file_and_directory_by_directory(tmp_path, monkeypatch):
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "sub" / "f").write_bytes(b"x")
    os.symlink("nowhere", tmp_path / "out" / "dangling")  # links are skipped, never opened
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or real_fsync(fd))
    storage.sync_tree(str(tmp_path / "out"))
    inodes = {os.stat(tmp_path / p).st_ino for p in ("out", "out/sub", "out/sub/f")}
    assert set(synced) == inodes
    synced.clear()
    storage.move_into_place(str(tmp_path / "out"), str(tmp_path / "published" / "1"))
    assert set(synced) == {os.stat(tmp_path).st_ino, os.stat(tmp_path / "published").st_ino}
    assert (tmp_path / "published" / "1" / "sub" / "f").read_bytes() == b"x"
    (tmp_path / "second").mkdir()
    storage.move_into_place(str(tmp_path / "second"), str(tmp_path / "published" / "2"))  # a parent that exists
    assert sorted(os.listdir(tmp_path / "published")) == ["1", "2"]
    storage.sync_tree("ram://nothing-to-sync")  # remote writes are durable when closed


def test_syncing_a_tree_leaves_no_file_descriptor_open(tmp_path):
    for index in range(20):
        (tmp_path / "out" / str(index)).mkdir(parents=True)
        (tmp_path / "out" / str(index) / "f").write_bytes(b"x")
    before = len(os.listdir("/proc/self/fd"))
    storage.sync_tree(str(tmp_path / "out"))
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_moved_tree_leaves_no_empty_directories_behind_on_ram():
    base = f"ram://storage-{uuid.uuid4().hex}"
    tree(base, {"src/a": b"1", "src/sub/b": b"2"})
    storage.move_tree(storage.join(base, "src"), storage.join(base, "moved"))
    assert not storage.exists(storage.join(base, "src")) and storage.listdir(base) == ["moved"]

