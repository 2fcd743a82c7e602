"""Ingest: every source kind on small local data, deterministic split, record conservation."""
import collections
import csv
import io
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ganpipe.components import ingest
from ganpipe.infra import beamio
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.infra.example_proto import Example

QUIET = dict(log=lambda line: None)


def read_split(output_dir, split):
    """{key: feature map} of every record in a split's shards."""
    records = {}
    for path in beamio.shard_paths(os.path.join(output_dir, split)):
        for serialized in beamio.iter_records(path):
            feature = Example.FromString(serialized).features.feature
            key = feature["key"].bytes_list.value[0].decode()
            assert key not in records, f"duplicate record {key}"
            records[key] = feature
    return records


def label_of(feature):
    return feature["label"].bytes_list.value[0].decode() if "label" in feature else None


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("digits"))
    ingest.run_ingest("digits", output, **QUIET)
    return output


def test_digits_counts_pixels_labels_and_split(digits_dir):
    metadata = ingest.load_metadata(digits_dir)
    train, evaluation = read_split(digits_dir, "train"), read_split(digits_dir, "eval")
    assert metadata["kind"] == "image"
    assert sorted(os.listdir(digits_dir)) == ["eval", "metadata.json", "train"]  # no temporary files left
    assert os.listdir(os.path.join(digits_dir, "eval")) == ["data-00000-of-00001.tfrecord"]
    assert metadata["counts"] == {"train": len(train), "eval": len(evaluation)}
    assert len(train) + len(evaluation) == 1797
    assert 0.07 < len(evaluation) / 1797 < 0.13
    assert metadata["split"]["split_key"] == "path" and metadata["split"]["salt"] == ""
    records = {**train, **evaluation}
    expected = documented_split({key: key for key in records}, {k: f["image"].bytes_list.value[0] for k, f in records.items()}, 0.1)
    assert {key: "eval" if key in evaluation else "train" for key in records} == expected
    images, labels = load_digits_reference()
    assert metadata["label_names"] == [str(i) for i in range(10)]
    assert metadata["label_counts"] == {str(i): int(n) for i, n in enumerate(np.bincount(labels))}
    feature = train.get("digits/0000") or evaluation["digits/0000"]
    assert list(feature["image_shape"].int64_list.value) == [8, 8, 1]
    pixels = np.frombuffer(feature["image"].bytes_list.value[0], np.uint8).reshape(8, 8, 1)
    np.testing.assert_array_equal(pixels, images[0])
    assert label_of(feature) == str(labels[0])


def documented_split(names: dict, contents: dict, eval_fraction: float, salt: str = "") -> dict:
    """{key: split} by the README's rule: eval iff blake2b-128(salt NUL name) < eval_fraction * 2**128,
    a group of identical contents following its smallest hash."""
    import hashlib

    hashes = {key: int.from_bytes(hashlib.blake2b(salt.encode() + b"\0" + name.encode(), digest_size=16).digest(), "big")
              for key, name in names.items()}
    group = {}
    for key, content in contents.items():
        group[content] = min(group.get(content, hashes[key]), hashes[key])
    return {key: "eval" if group[contents[key]] < eval_fraction * 2**128 else "train" for key in names}


def load_digits_reference():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8)[..., None], digits.target


def test_split_depends_only_on_the_key_and_grows_monotonically(digits_dir, tmp_path):
    wider = str(tmp_path / "wider")
    ingest.run_ingest("digits", wider, eval_fraction=0.3, **QUIET)
    eval_10, eval_30 = set(read_split(digits_dir, "eval")), set(read_split(wider, "eval"))
    assert eval_10 < eval_30  # a larger eval fraction only moves train records to eval
    assert 0.25 < len(eval_30) / 1797 < 0.35


def test_multi_threading_runner_never_loses_records_silently(digits_dir, tmp_path):
    output = str(tmp_path / "threads")
    args = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]
    try:
        metadata = ingest.run_ingest("digits", output, num_shards=4, beam_args=args, **QUIET)
    except ComponentError as error:  # acceptable: the loss was detected and reported
        assert "lost" in str(error)
        return
    assert len(beamio.shard_paths(os.path.join(output, "train"))) == 4
    for split in ingest.SPLITS:  # same split as the default runner, every record once
        assert set(read_split(output, split)) == set(read_split(digits_dir, split))
        assert metadata["counts"][split] == len(read_split(output, split))


PATCH_KEY = re.compile(r"photos/(china|flower)/64px/y(\d{3})-x(\d{3})")


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("photos"))
    ingest.run_ingest("photos", output, patch_size=64, patch_stride=48, eval_fraction=0.2, **QUIET)
    return output


def photo_patch_records(output_dir):
    """{split: {(photo, top, left): patch pixels}} of a photos run."""
    patches = {}
    for split in ingest.SPLITS:
        patches[split] = {}
        for key, feature in read_split(output_dir, split).items():
            name, top, left = PATCH_KEY.fullmatch(key).groups()
            assert list(feature["image_shape"].int64_list.value) == [64, 64, 3]
            assert label_of(feature) is None
            pixels = np.frombuffer(feature["image"].bytes_list.value[0], np.uint8).reshape(64, 64, 3)
            patches[split][name, int(top), int(left)] = pixels
    return patches


def test_photos_patches_counts_pixels_and_held_out_region(photos_dir):
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    reference = {os.path.basename(f)[:-4]: image for f, image in zip(photos.filenames, photos.images)}
    patches = photo_patch_records(photos_dir)
    # 427x640 photos, eval strip = the right 128 px: 8 rows x (10 train + 2 eval) columns each.
    assert {split: len(p) for split, p in patches.items()} == {"train": 160, "eval": 32}
    assert ingest.load_metadata(photos_dir)["counts"] == {"train": 160, "eval": 32}
    for split, split_patches in patches.items():
        for (name, top, left), pixels in split_patches.items():
            np.testing.assert_array_equal(pixels, reference[name][top : top + 64, left : left + 64])
    for name in reference:
        train_right = max(left + 64 for (photo, _, left) in patches["train"] if photo == name)
        eval_left = min(left for (photo, _, left) in patches["eval"] if photo == name)
        assert train_right <= 512 <= eval_left  # no eval pixel is in any train patch
        assert sorted({top for (photo, top, _) in patches["eval"] if photo == name}) == list(range(0, 337, 48))


def test_photos_are_deterministic(photos_dir, tmp_path):
    again = str(tmp_path / "again")
    ingest.run_ingest("photos", again, patch_size=64, patch_stride=48, eval_fraction=0.2, **QUIET)
    first, second = photo_patch_records(photos_dir), photo_patch_records(again)
    for split in ingest.SPLITS:
        assert first[split].keys() == second[split].keys()
        assert all(np.array_equal(first[split][k], second[split][k]) for k in first[split])


def test_photos_without_eval_fraction_are_all_train(tmp_path):
    metadata = ingest.run_ingest("photos", str(tmp_path / "out"), patch_size=128, patch_stride=128,
                                 eval_fraction=0.0, **QUIET)
    assert metadata["counts"] == {"train": 2 * 3 * 5, "eval": 0}


def test_output_directory_must_not_hold_shards(digits_dir):
    with pytest.raises(ComponentError, match="already holds shards"):
        ingest.run_ingest("digits", digits_dir, **QUIET)


def test_image_folder_labels_from_subfolders(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    files = {"cat/a.png": "PNG", "cat/b.jpg": "JPEG", "dog/c.bmp": "BMP", "dog/d.gif": "GIF", "e.png": "PNG"}
    for name, image_format in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (9, 7, 3), np.uint8)).save(root / name, format=image_format)
    (root / ".hidden.png").write_bytes(b"ignored")
    output = str(tmp_path / "out")

    metadata = ingest.run_ingest(f"images:{root}", output, eval_fraction=0.5, **QUIET)

    records = {**read_split(output, "train"), **read_split(output, "eval")}
    assert sorted(os.path.relpath(key, root) for key in records) == sorted(files)
    assert metadata["label_names"] == ["cat", "dog"]
    assert metadata["label_counts"] == {"cat": 2, "dog": 2}
    for key, feature in records.items():
        relative = os.path.relpath(key, root)
        assert label_of(feature) == (relative.split("/")[0] if "/" in relative else None)
        assert feature["image"].bytes_list.value[0] == (root / relative).read_bytes()
        assert "image_shape" not in feature


class TinyShapes(tfds.core.GeneratorBasedBuilder):
    """A real (prepared on disk, two shards) TFDS data set of 8x8 PNG images in three classes."""

    VERSION = tfds.core.Version("1.0.0")
    COUNT = 30

    def _info(self):
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=["circle", "square", "triangle"]),
        })
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(self.COUNT):
            yield i, {"image": self.pixels(i), "label": i % 3}

    @staticmethod
    def pixels(i):
        return np.full((8, 8, 1), 7 * i, np.uint8)


def test_tfds_source_reads_shards_and_keeps_the_encoded_images(tmp_path):
    data_dir = str(tmp_path / "tfds")
    TinyShapes(data_dir=data_dir, config=None).download_and_prepare(
        download_config=tfds.download.DownloadConfig(max_examples_per_split=None, num_shards=2)
    )
    output = str(tmp_path / "out")
    metadata = ingest.run_ingest("tfds:tiny_shapes", output, tfds_data_dir=data_dir, eval_fraction=0.2, **QUIET)
    records = {**read_split(output, "train"), **read_split(output, "eval")}
    assert len(records) == TinyShapes.COUNT == sum(metadata["counts"].values())
    assert metadata["label_names"] == ["circle", "square", "triangle"]
    seen = set()
    for feature in records.values():
        assert "image_shape" not in feature  # the stored PNG, not decoded pixels
        pixels = np.asarray(Image.open(io.BytesIO(feature["image"].bytes_list.value[0])))
        i = int(pixels[0, 0]) // 7
        np.testing.assert_array_equal(pixels, TinyShapes.pixels(i)[..., 0])
        assert label_of(feature) == metadata["label_names"][i % 3]
        seen.add(i)
    assert seen == set(range(TinyShapes.COUNT))


def test_tfds_missing_data_fails_fast_without_download(tmp_path):
    with pytest.raises(ComponentError, match="tfds_download"):
        ingest.run_ingest("tfds:mnist", str(tmp_path / "out"), tfds_data_dir=str(tmp_path / "none"), **QUIET)
    with pytest.raises(ComponentError, match="not found"):
        ingest.run_ingest("tfds:no_such_dataset", str(tmp_path / "out"), **QUIET)


def write_examples(path, examples):
    with open(path, "wb") as f:
        beamio.write_tfrecords(f, (beamio.serialize_example(**e) for e in examples))


def test_tfrecord_source_with_custom_feature_names(tmp_path):
    rng = np.random.default_rng(1)
    pngs = [png_bytes(rng.integers(0, 255, (5, 5), np.uint8)) for _ in range(10)]
    for part in range(2):
        write_examples(tmp_path / f"part-{part}.tfrecord", [
            {"bytes_features": [("img", [pngs[i]]), ("species", [b"ab"[i % 2 : i % 2 + 1]])]}
            for i in range(part * 5, part * 5 + 5)
        ])
    output = str(tmp_path / "out")

    metadata = ingest.run_ingest(
        f"tfrecord:{tmp_path}/part-*.tfrecord", output, image_feature="img", label_feature="species", **QUIET
    )

    records = {**read_split(output, "train"), **read_split(output, "eval")}
    assert metadata["kind"] == "image" and len(records) == 10
    assert sorted(f["image"].bytes_list.value[0] for f in records.values()) == sorted(pngs)
    assert metadata["label_names"] == ["a", "b"] and metadata["label_counts"] == {"a": 5, "b": 5}


def test_tfrecord_vectors_with_integer_labels(tmp_path):
    write_examples(tmp_path / "vectors.tfrecord", [
        {"float_features": [("image", [i, i + 0.5, -i])], "int_features": [("label", [i % 3])]} for i in range(9)
    ])
    output = str(tmp_path / "out")
    metadata = ingest.run_ingest(f"tfrecord:{tmp_path}/vectors.tfrecord", output, **QUIET)
    records = {**read_split(output, "train"), **read_split(output, "eval")}
    assert metadata["kind"] == "vector"
    assert metadata["feature_names"] == ["image[0]", "image[1]", "image[2]"]
    assert metadata["label_names"] == ["0", "1", "2"]
    assert sorted(tuple(f["features"].float_list.value) for f in records.values()) == [
        (i, i + 0.5, -i) for i in range(9)
    ]


def test_npz_vectors_and_images(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 4))
    np.savez(tmp_path / "vectors.npz", x=x, y=np.arange(20) % 4)
    images = rng.integers(0, 255, (12, 6, 6), np.uint8)
    np.savez(tmp_path / "images.npz", pixels=images)

    vectors = ingest.run_ingest(f"npz:{tmp_path}/vectors.npz", str(tmp_path / "v"), label_column="y", **QUIET)
    assert vectors["kind"] == "vector" and sum(vectors["counts"].values()) == 20
    assert vectors["label_names"] == ["0", "1", "2", "3"]
    records = {**read_split(str(tmp_path / "v"), "train"), **read_split(str(tmp_path / "v"), "eval")}
    row = records[f"{tmp_path}/vectors.npz[7]"]
    np.testing.assert_allclose(row["features"].float_list.value, x[7].astype(np.float32))
    assert label_of(row) == "3"

    pictures = ingest.run_ingest(f"npz:{tmp_path}/images.npz", str(tmp_path / "i"), features_key="pixels", **QUIET)
    assert pictures["kind"] == "image" and pictures["label_names"] == []
    records = {**read_split(str(tmp_path / "i"), "train"), **read_split(str(tmp_path / "i"), "eval")}
    feature = records[f"{tmp_path}/images.npz[3]"]
    assert list(feature["image_shape"].int64_list.value) == [6, 6]
    assert feature["image"].bytes_list.value[0] == images[3].tobytes()


def test_csv_rows_bad_rows_become_error_records(tmp_path):
    path = tmp_path / "table.csv"
    rows = [["a", "b", "kind"]] + [[str(i), str(i * 2.5), "xy"[i % 2]] for i in range(12)]
    rows += [["1", "", "x"], ["1", "abc", "y"], ["1", "2"], ["3", "4", "z"], ["5", "nan", "x"]]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    output = str(tmp_path / "out")

    metadata = ingest.run_ingest(f"csv:{path}", output, label_column="kind", label_names=["x", "y"], **QUIET)

    records = {**read_split(output, "train"), **read_split(output, "eval")}
    assert len(records) == 17 and metadata["records_with_error"] == 4
    assert metadata["feature_names"] == ["a", "b"] and metadata["label_names"] == ["x", "y"]
    errors = {key.rsplit(":", 1)[1]: f["error"].bytes_list.value[0].decode() for key, f in records.items() if "error" in f}
    assert errors == {
        "14": "line 14: missing value in column 'b'",
        "15": "line 15: column 'b': 'abc' is not a number",
        "16": "line 16: 2 cells, expected 3",
        "17": "label 'z' is not in label_names",
    }
    nan_row = records[f"{path}:18"]  # NaN parses; Preprocess rejects it
    assert np.isnan(nan_row["features"].float_list.value[1])
    assert list(records[f"{path}:5"]["features"].float_list.value) == [3.0, 7.5]


@pytest.mark.parametrize("source, params, message", [
    ("ftp:somewhere", {}, "unknown source kind 'ftp'"),
    ("photos:china", {}, "takes no argument"),
    ("photos", {"patch_size": 500}, "patch_size: 500 does not fit the 427x640"),
    ("photos", {"patch_size": 300, "eval_fraction": 0.6}, "leaving less than patch_size 300"),
    ("images", {}, "needs a path"),
    ("images:{tmp}/missing", {}, "does not exist"),
    ("images:{tmp}/empty_dir", {}, "empty source"),
    ("tfrecord:{tmp}/*.nothing", {}, "no files match"),
    ("tfrecord:{tmp}/empty.tfrecord", {}, "empty source"),
    ("csv:{tmp}/header_only.csv", {}, "empty source"),
    ("csv:{tmp}/table.csv", {"label_column": "nope"}, "'nope' is not a column"),
    ("npz:{tmp}/data.npz", {"label_column": "labels"}, "no array 'labels'"),
    ("npz:{tmp}/none.npz", {}, "no rows"),
])
def test_bad_sources_fail_at_once_with_a_clear_message(tmp_path, source, params, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    (tmp_path / "header_only.csv").write_text("a,b\n")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    np.savez(tmp_path / "data.npz", x=np.zeros((3, 2)))
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 2)))
    with pytest.raises(ComponentError, match=message):
        ingest.run_ingest(source.format(tmp=tmp_path), str(tmp_path / "out"), **params, **QUIET)


def test_component_executor_and_parameters(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.arange(30.0).reshape(10, 3))
    params = ingest.COMPONENT.resolve_parameters({"source": f"npz:{tmp_path}/data.npz", "eval_fraction": 0.2})
    assert params["num_shards"] == 0 and params["tfds_download"] is False
    with pytest.raises(ValueError, match="ingest.eval_fraction"):
        ingest.COMPONENT.resolve_parameters({"eval_fraction": 2}, section="ingest")
    examples = Artifact("Examples", str(tmp_path / "examples"))
    lines = []
    context = ExecutionContext("test", "Ingest", 1, beam_args=["--runner=DirectRunner"], log=lines.append)

    ingest.COMPONENT.execute({}, {"examples": examples}, params, context)

    assert examples.properties["kind"] == "vector"
    assert examples.properties["train_count"] + examples.properties["eval_count"] == 10
    assert os.path.exists(examples.path("metadata.json")) and lines


def test_split_fraction_rule():
    from ganpipe.components.sources.splits import Splitter, digest

    splitter = Splitter(0.2)
    splits = collections.Counter(splitter.split_of_hash(digest("", f"k{i}".encode())) for i in range(5000))
    assert splits["eval"] in range(900, 1100)


def test_every_registered_source_kind_has_a_planner_and_its_parameters_in_the_spec():
    import importlib

    from ganpipe.components import sources

    names = [p.name for p in ingest.COMPONENT.parameters]
    assert len(names) == len(set(names))
    for kind in sources.KINDS.values():
        assert callable(importlib.import_module(kind.module).plan)
        assert {p.name for p in kind.parameters} <= set(names)
        assert kind.syntax in next(p.help for p in ingest.COMPONENT.parameters if p.name == "source")


def test_data_step_modules_do_not_import_tensorflow():
    """Beam workers import the modules of the DoFns they run: a fresh worker process must not
    pay TensorFlow's import (seconds and a GB each) for the data steps."""
    import subprocess
    import sys

    code = ("import importlib, sys; import ganpipe.components.ingest, ganpipe.components.preprocess;"
            "from ganpipe.components.sources import KINDS;"
            "[importlib.import_module(kind.module) for kind in KINDS.values()];"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_example_proto_is_tensorflows_wire_format():
    import tensorflow as tf

    ours, theirs = Example(), tf.train.Example()
    for example in (ours, theirs):
        feature = example.features.feature
        feature["key"].bytes_list.value.extend([b"a/1.png", b""])
        feature["shape"].int64_list.value.extend([32, -1, 2**40])
        feature["x"].float_list.value.extend([0.5, -1.25, 3e38])
        feature["none"].float_list.SetInParent()
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    parsed = Example.FromString(theirs.SerializeToString())
    assert parsed.features.feature["none"].WhichOneof("kind") == "float_list"
    assert list(parsed.features.feature["shape"].int64_list.value) == [32, -1, 2**40]


def test_ingest_parameters_are_its_own_plus_each_kinds_and_run_ingest_takes_the_spec_defaults(tmp_path):
    from ganpipe.components import sources, specs

    kinds = {p.name for kind in sources.KINDS.values() for p in kind.parameters}
    own = {"source", "eval_fraction", "num_shards", "label_names", "split_key", "split_salt"}
    assert {p.name for p in specs.INGEST.parameters} == own | kinds
    assert specs.FILE_SOURCE_KINDS == ("images", "tfrecord", "npz", "csv")
    with pytest.raises(ComponentError, match=r"ingest.csv_delimitr: unknown key \(did you mean 'csv_delimiter'\?\)"):
        ingest.run_ingest("digits", str(tmp_path / "out"), csv_delimitr=";")
