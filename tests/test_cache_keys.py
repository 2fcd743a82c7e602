"""What a cache key sees: a step's code closure (read from import statements), the listing of the
files behind a source, the content of a small single file. Fast tests, no TensorFlow run."""
import os
import time

import pytest

from ganpipe.components import specs
from ganpipe.components.base import Component, Parameter
from ganpipe.infra import fingerprints, listing
from ganpipe.pipeline import cache

# ----------------------------------------------------------------------------- code closure

PACKAGE_FILES = {
    "__init__.py": "",
    "plain.py": "X = 1\n",
    "star.py": "V = 7\n",
    "named.py": "Y = 2\n",
    "unused.py": "Z = 3\n",
    "toplevel_helper.py": "W = 4\n",
    "steps/__init__.py": "from .sibling import S\n",
    "steps/sibling.py": "S = 5\n",
    "steps/helpers.py": "def thing():\n    return 6\n",
    "steps/executor.py": (
        "import json\n"
        "import {pkg}.plain\n"
        "from {pkg} import named\n"
        "from .helpers import thing\n"
        "from .. import toplevel_helper\n"
        "from {pkg}.star import *\n\n\n"
        "def run(inputs, outputs, params, ctx):\n"
        "    from {pkg} import named as again  # imports inside functions count too\n"
    ),
}


@pytest.fixture
def user_package(tmp_path, monkeypatch, request):
    """A package of the user's, importable, with every import form the closure must follow."""
    name = "userpkg_" + request.node.name.replace("[", "_").replace("]", "_").replace("-", "_")[:40]
    for relative, text in PACKAGE_FILES.items():
        path = tmp_path / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(pkg=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, tmp_path / name


def step(executor, code_modules=None):
    return Component("Step", {}, {"out": "Out"}, (Parameter("family", str, "mine"),), executor,
                     code_modules=code_modules)


def test_closure_follows_every_import_form_and_nothing_else(user_package):
    name, _ = user_package
    closure = cache.code_closure(step(f"{name}.steps.executor:run"))
    assert set(closure) == {f"{name}{suffix}" for suffix in (
        "", ".plain", ".star", ".named", ".toplevel_helper", ".steps", ".steps.sibling", ".steps.helpers",
        ".steps.executor")}
    assert closure[name].endswith(os.path.join(name, "__init__.py"))
    assert closure[f"{name}.steps.executor"].endswith(os.path.join("steps", "executor.py"))


def test_a_function_executor_is_found_by_its_module(user_package):
    import importlib

    name, _ = user_package
    run = importlib.import_module(f"{name}.steps.executor").run
    assert set(cache.code_closure(step(run))) == set(cache.code_closure(step(f"{name}.steps.executor:run")))


def test_editing_a_module_of_the_closure_changes_the_code_fingerprint_and_others_do_not(user_package):
    name, root = user_package
    component = step(f"{name}.steps.executor:run")
    before = cache.code_fingerprint(component)
    (root / "unused.py").write_text("Z = 30\n")
    assert cache.code_fingerprint(component) == before
    (root / "steps" / "sibling.py").write_text("S = 50\n")
    assert cache.code_fingerprint(component) != before


def test_code_modules_join_the_closure_only_when_parameters_are_given(user_package):
    name, root = user_package
    component = step("ganpipe.components.sources.labels:canonical_label",
                     code_modules=lambda params: (f"{name}.plain",) if params["family"] == "mine" else ())
    assert f"{name}.plain" not in cache.code_closure(component)
    closure = cache.code_closure(component, {"family": "mine"})
    assert f"{name}.plain" in closure and f"{name}" in closure
    key = cache.cache_key(component, {"family": "mine"}, {})
    (root / "plain.py").write_text("X = 10\n")
    assert cache.cache_key(component, {"family": "mine"}, {}) != key


def test_a_custom_family_module_is_in_train_and_evaluate_keys_built_in_families_add_nothing(tmp_path, monkeypatch):
    family = tmp_path / "tinyfamily_keys.py"
    family.write_text("WIDTH = 16\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(specs.FAMILY_NETWORKS, "tiny", ())
    monkeypatch.setitem(specs.FAMILY_MODULES, "tiny", "tinyfamily_keys")
    train = specs.TRAIN.resolve_parameters({"family": "tiny"})
    built_in = specs.TRAIN.resolve_parameters({})
    assert "tinyfamily_keys" in cache.code_closure(specs.TRAIN, train)
    assert "tinyfamily_keys" not in cache.code_closure(specs.TRAIN, built_in)
    assert "tinyfamily_keys" in cache.code_closure(specs.EVALUATE, specs.EVALUATE.resolve_parameters({}))
    assert cache.code_fingerprint(specs.TRAIN) == cache.code_fingerprint(specs.TRAIN, built_in)
    keys = cache.cache_key(specs.TRAIN, train, {}), cache.cache_key(specs.EVALUATE, {}, {})
    family.write_text("WIDTH = 64\n")
    assert cache.cache_key(specs.TRAIN, train, {}) != keys[0]
    assert cache.cache_key(specs.EVALUATE, {}, {}) != keys[1]


def test_register_family_records_the_calling_module(monkeypatch):
    monkeypatch.setattr(specs, "FAMILY_NETWORKS", dict(specs.FAMILY_NETWORKS))
    monkeypatch.setattr(specs, "FAMILY_MODULES", {})
    specs.register_family("here", ())
    specs.register_family("there", (), module="elsewhere.families")
    assert specs.FAMILY_MODULES == {"here": __name__, "there": "elsewhere.families"}


def test_the_key_does_not_depend_on_the_order_parameters_are_given_in():
    params = specs.INGEST.resolve_parameters({})
    reordered = dict(reversed(list(params.items())))
    assert cache.cache_key(specs.INGEST, reordered, {}) == cache.cache_key(specs.INGEST, params, {})


def test_ingest_closure_holds_its_packages_and_the_source_modules():
    closure = cache.code_closure(specs.INGEST)
    for module in ("ganpipe", "ganpipe.components", "ganpipe.components.ingest", "ganpipe.components.sources",
                   "ganpipe.components.sources.images", "ganpipe.infra.listing"):
        assert module in closure, module
    assert "ganpipe.components.train" not in closure


# ------------------------------------------------------------------------------- listings


def write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def paths(found, attribute="files"):
    return [entry.path for entry in getattr(found, attribute)]


def test_glob_follows_beams_rule_hidden_files_and_subdirectories_included(tmp_path):
    for relative in ("a.tfrecord", "sub/b.tfrecord", "sub/.c.tfrecord", "sub/deeper/d.tfrecord", "e.txt"):
        write(tmp_path / relative)
    everywhere = listing.list_files(f"{tmp_path}/**.tfrecord")
    assert paths(everywhere) == [str(tmp_path / r) for r in
                                 ("a.tfrecord", "sub/.c.tfrecord", "sub/b.tfrecord", "sub/deeper/d.tfrecord")]
    assert paths(listing.list_files(f"{tmp_path}/*.tfrecord")) == [str(tmp_path / "a.tfrecord")]
    assert paths(listing.list_files(f"{tmp_path}/sub/?.tfrecord")) == [str(tmp_path / "sub" / "b.tfrecord")]
    assert sorted(everywhere.directories) == [str(tmp_path / "sub"), str(tmp_path / "sub" / "deeper")]


def test_links_to_directories_are_followed_and_a_cycle_is_a_rejected_entry(tmp_path):
    write(tmp_path / "elsewhere" / "b" / "1.png")
    root = tmp_path / "root"
    write(root / "a" / "1.png")
    (root / "b").symlink_to(tmp_path / "elsewhere" / "b")
    (root / "a" / "up").symlink_to(root)
    found = listing.list_files(f"{root}/**")
    assert paths(found) == [str(root / "a" / "1.png"), str(root / "b" / "1.png")]
    assert paths(found, "rejected") == [str(root / "a" / "up")]
    assert "a cycle" in found.rejected[0].problem and str(root) in found.rejected[0].problem


def test_a_link_to_a_sibling_directory_is_not_a_cycle(tmp_path):
    write(tmp_path / "root" / "a" / "1.png")
    (tmp_path / "root" / "also_a").symlink_to(tmp_path / "root" / "a")
    found = listing.list_files(f"{tmp_path / 'root'}/**")
    assert paths(found) == [str(tmp_path / "root" / "a" / "1.png"), str(tmp_path / "root" / "also_a" / "1.png")]
    assert found.rejected == []


def test_dangling_links_and_special_files_are_rejected_entries_where_the_pattern_reaches(tmp_path):
    write(tmp_path / "ok.bin")
    (tmp_path / "gone.bin").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "pipe.bin")
    (tmp_path / "gone.other").symlink_to(tmp_path / "nowhere")  # not matched: not listed at all
    found = listing.list_files(f"{tmp_path}/*.bin")
    assert paths(found) == [str(tmp_path / "ok.bin")]
    problems = {entry.path: entry.problem for entry in found.rejected}
    assert problems == {str(tmp_path / "gone.bin"): f"{tmp_path / 'gone.bin'}: dangling link to {tmp_path / 'nowhere'}",
                        str(tmp_path / "pipe.bin"): f"{tmp_path / 'pipe.bin'}: not a regular file"}
    assert [e.path for e in found.entries()] == [str(tmp_path / n) for n in ("gone.bin", "ok.bin", "pipe.bin")]


def test_a_directory_that_cannot_be_listed_is_rejected_when_the_pattern_reaches_into_it(tmp_path):
    missing = tmp_path / "missing"
    for pattern in (f"{missing}/**", f"{missing}/*.png"):
        found = listing.list_files(pattern)
        assert found.files == [] and paths(found, "rejected") == [str(missing)], pattern
        assert "cannot list the directory" in found.rejected[0].problem
    assert listing.list_files(f"{tmp_path}/miss*").rejected == []


def test_a_single_path_lists_itself_or_nothing(tmp_path):
    file = write(tmp_path / "table.csv")
    assert paths(listing.list_files(str(file))) == [str(file)]
    assert listing.list_files(str(tmp_path / "none.csv")).entries() == []
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    assert paths(listing.list_files(str(tmp_path / "dangling.csv")), "rejected") == [str(tmp_path / "dangling.csv")]


def test_identity_changes_when_a_file_is_replaced_with_the_same_size_and_mtime(tmp_path):
    file = write(tmp_path / "a.png", b"1234")
    before = listing.list_files(f"{tmp_path}/*")
    status = os.stat(file)
    time.sleep(0.01)
    file.write_bytes(b"5678")  # in place: same inode, new ctime
    os.utime(file, ns=(status.st_atime_ns, status.st_mtime_ns))
    in_place = listing.list_files(f"{tmp_path}/*")
    assert in_place.files[0].identity != before.files[0].identity
    replacement = write(tmp_path / "b.tmp", b"9abc")
    os.utime(replacement, ns=(status.st_atime_ns, status.st_mtime_ns))
    os.replace(replacement, file)  # rsync -t: a new inode under the old name
    assert listing.list_files(f"{tmp_path}/*").files[0].identity not in (before.files[0].identity,
                                                                       in_place.files[0].identity)
    fields = listing.list_files(f"{tmp_path}/*").files[0].identity.split(":")
    stat = os.stat(file)
    assert fields == [str(stat.st_size), str(stat.st_mtime_ns), str(stat.st_ino), str(stat.st_ctime_ns)]


def test_an_object_is_identified_by_size_update_time_and_any_generation_its_metadata_has():
    from apache_beam.io.filesystem import FileMetadata

    plain = FileMetadata("gs://b/a.png", 10, 1700000000.5)
    assert listing.object_identity(plain) == "10:1700000000.5"
    versioned = FileMetadata("gs://b/a.png", 10, 1700000000.5)
    versioned.generation, versioned.etag = 1234, "CJ2"  # what a newer filesystem's metadata may carry
    assert listing.object_identity(versioned) == "10:1700000000.5:generation=1234:etag=CJ2"


def test_without_filters_every_part_of_a_listing():
    found = listing.Listing([listing.Entry("/r/a", "1"), listing.Entry("/r/.b", "2")],
                            [listing.Entry("/r/.c", problem="x"), listing.Entry("/r/d", problem="y")], ["/r/.e", "/r/f"])
    kept = found.without(lambda path: path.startswith("/r/."))
    assert (paths(kept), paths(kept, "rejected"), kept.directories) == (["/r/a"], ["/r/d"], ["/r/f"])


def test_images_listing_skips_hidden_names_below_the_root_only(tmp_path):
    root = tmp_path / ".data" / "images"  # a hidden folder above the root does not hide the images
    write(root / "a" / "1.png")
    write(root / "a" / ".DS_Store")
    write(root / ".git" / "config")
    found = specs.sources.KINDS["images"].listing(str(root) + "/")
    assert paths(found) == [str(root / "a" / "1.png")]


# ---------------------------------------------------------------------------- fingerprints


def test_listing_digest_sees_files_rejections_and_directories(tmp_path):
    write(tmp_path / "a" / "1.png")
    digests = [fingerprints.listing_digest(listing.list_files(f"{tmp_path}/**"))]
    write(tmp_path / "a" / "2.png")
    digests.append(fingerprints.listing_digest(listing.list_files(f"{tmp_path}/**")))
    (tmp_path / "a" / "3.png").symlink_to(tmp_path / "nowhere")
    digests.append(fingerprints.listing_digest(listing.list_files(f"{tmp_path}/**")))
    (tmp_path / "b").mkdir()
    digests.append(fingerprints.listing_digest(listing.list_files(f"{tmp_path}/**")))
    assert len(set(digests)) == 4
    assert fingerprints.listing_digest(listing.list_files(f"{tmp_path}/**")) == digests[-1]


def test_a_small_single_file_counts_by_content_a_large_one_and_globs_by_listing(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprints, "SMALL_FILE_BYTES", 8)
    small = write(tmp_path / "small.csv", b"12345678")
    assert fingerprints.source_files(str(small), listing.list_files(str(small))) == \
        fingerprints.file_content(str(small))
    large = write(tmp_path / "large.csv", b"123456789")
    assert fingerprints.source_files(str(large), listing.list_files(str(large))) == \
        fingerprints.listing_digest(listing.list_files(str(large)))
    pattern = f"{tmp_path}/small.*"
    assert fingerprints.source_files(pattern, listing.list_files(pattern)) == \
        fingerprints.listing_digest(listing.list_files(pattern))
    (tmp_path / "small.csv").unlink()
    (tmp_path / "small.csv").symlink_to(tmp_path / "nowhere")
    assert fingerprints.source_files(str(small), listing.list_files(str(small))) == \
        fingerprints.listing_digest(listing.list_files(str(small)))


def test_a_touched_small_file_keeps_its_key_an_edited_one_does_not(tmp_path):
    table = write(tmp_path / "t.csv", b"a,b\n1,2\n")
    key = specs.ingest_inputs(specs.INGEST.resolve_parameters({"source": f"csv:{table}"}))
    os.utime(table, ns=(0, 10 ** 18))
    assert specs.ingest_inputs(specs.INGEST.resolve_parameters({"source": f"csv:{table}"})) == key
    table.write_bytes(b"a,b\n1,3\n")
    assert specs.ingest_inputs(specs.INGEST.resolve_parameters({"source": f"csv:{table}"})) != key


def test_tfds_data_dir_default_and_listing(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    write(tmp_path / "given" / "mnist" / "3.0.1" / "a.tfrecord")
    given = fingerprints.tfds_data("mnist:3.0.1", str(tmp_path / "given"))
    assert given["data_dir"] == str(tmp_path / "given")
    assert given["files"] == fingerprints.listing_digest(listing.list_files(f"{tmp_path}/given/mnist/**"))
    assert fingerprints.tfds_data("mnist", None)["data_dir"] == str(tmp_path / "env")
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert fingerprints.tfds_data("mnist", None)["data_dir"] == os.path.expanduser("~/tensorflow_datasets")


def test_what_changed_names_dependency_versions_then_inputs_then_external_files():
    before = {"versions": {"click": "8.1"}, "inputs": {"examples": "a"}, "external": {"listing": "x"}}
    assert cache.what_changed(before, dict(before)) is None
    assert cache.what_changed({}, {"versions": None, "inputs": None}) is None  # missing parts: empty
    assert cache.what_changed(before, {**before, "versions": {"click": "8.2", "rich": "13"}}) == (
        "dependency versions changed: click 8.1 -> 8.2, rich None -> 13")
    assert cache.what_changed(before, {**before, "inputs": {"examples": "b"}}) == "input examples changed"
    assert cache.what_changed(before, {**before, "inputs": {"examples": "b", "schema": "s"}}) == (
        "inputs examples, schema changed")
    assert cache.what_changed(before, {**before, "external": {"listing": "y"}}) == (
        "files read from outside the pipeline changed (e.g. the source's listing)")
    assert cache.what_changed(before, {}).startswith("dependency versions changed: click 8.1 -> None")
