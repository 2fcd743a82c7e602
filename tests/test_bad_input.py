"""Bad input: generated corrupt, truncated, odd-mode, odd-encoding and odd-label inputs for every
source kind, run through the real Ingest and Preprocess.

For each case: the exact rejected count and reason class, every good record kept bit-for-bit,
and read = written + rejected. Inputs are written and outputs read with TensorFlow's own
TFRecord reader and writer and Pillow/numpy, not with ganpipe's code.
"""
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ganpipe.components import ingest, preprocess
from ganpipe.components.base import ComponentError

QUIET = dict(log=lambda line: None)


# ------------------------------------------------------------------------------------ helpers
def read_records(directory):
    """{key: feature map} of every record in the TFRecord shards of ``directory``/{train,eval}."""
    records = {}
    for split in ("train", "eval"):
        paths = tf.io.gfile.glob(os.path.join(directory, split, "*.tfrecord"))
        for serialized in tf.data.TFRecordDataset(paths):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            key = feature["key"].bytes_list.value[0].decode()
            assert key not in records, f"duplicate key {key}"
            records[key] = (split, feature)
    return records


def read_rejected(output):
    with open(os.path.join(output, preprocess.REJECTED_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(source, tmp_path, name="run", ingest_params=None, **preprocess_params):
    """Ingest + Preprocess; (metadata, processed records, rejected listing, result)."""
    examples, output = str(tmp_path / f"{name}-raw"), str(tmp_path / f"{name}-out")
    metadata = ingest.run_ingest(source, examples, **(ingest_params or {}), **QUIET)
    preprocess_params.setdefault("max_rejected_fraction", 1.0)
    result = preprocess.run_preprocess(examples, output, **preprocess_params, **QUIET)
    records = read_records(output)
    rejected = read_rejected(output)
    counts = result["statistics"]["records"]
    assert counts["read"] == counts["written"] + counts["rejected"] == len(records) + len(rejected)
    assert counts["read"] == sum(metadata["counts"].values())
    return metadata, records, rejected, result


def reasons(rejected):
    """{reason class: count}."""
    counted = {}
    for entry in rejected:
        counted[entry["reason"]] = counted.get(entry["reason"], 0) + 1
    return counted


def label_name(feature, label_names):
    return label_names[feature["label"].int64_list.value[0]]


def png(array, **save):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def write_tfrecord(path, records, options=None):
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for record in records:
            writer.write(record)


def example(**features):
    """A serialized tf.train.Example; bytes -> bytes_list, float -> float_list, int -> int64_list."""
    feature = {}
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(values[0], bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif isinstance(values[0], float):
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# ------------------------------------------------------------------------------------- CSV
CSV_GOOD = [  # (label, a, b): labels the landed code mangled
    ("7", "1.5", "2"), ("007", "3", "4"), ("1990", "5", "6"), ("1991", "7", "8"), ("1992", "9", "10"),
    ("²", "11", "12"), ("cat", "13.25", "-14"), ("7", "15", "16"), ("007", "17", "18"),
]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    """An Excel-style CSV (byte-order mark, CRLF) with good rows and one bad row of each kind,
    read in 32 KiB ranges: the oversized row spans several."""
    tmp_path = tmp_path_factory.mktemp("csv")
    lines = ["label,a,b".encode("utf-8-sig")]
    good_lines = {}
    for row in CSV_GOOD:
        good_lines[len(lines) + 1] = row
        lines.append(",".join(row).encode("utf-8"))
    bad = {
        "bad_encoding": b"cat,1,\xff\xfe",  # not UTF-8
        "bad_row": b"dog,1," + b"9" * (130 * 1024),  # a field over csv's 128 KiB limit
    }
    bad_lines = {}
    for reason, line in bad.items():
        bad_lines[len(lines) + 1] = reason
        lines.append(line)
    bad_lines[len(lines) + 1] = "bad_row"
    lines.append(b"dog,1,2,3")  # a cell too many
    bad_lines[len(lines) + 1] = "bad_value"
    lines.append(b"dog,1,abc")
    for row in CSV_GOOD[:2]:  # good rows after the bad ones
        good_lines[len(lines) + 1] = row
        lines.append(",".join(row).encode("utf-8"))
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    with pytest.MonkeyPatch.context() as patch:
        from ganpipe.components.sources import csv as csv_source

        patch.setattr(csv_source, "RANGE_BYTES", 32 << 10)
        outcome = run(f"csv:{path}", tmp_path, ingest_params={"label_column": "label", "eval_fraction": 0.2})
    return path, good_lines, bad_lines, outcome


def test_csv_byte_order_mark_header_and_every_good_row_kept_bit_for_bit(csv_run):
    path, good_lines, _, (metadata, records, _, _) = csv_run
    assert metadata["feature_names"] == ["a", "b"]
    kept = {int(key.rsplit(":", 1)[1]): feature for key, (_, feature) in records.items()}
    assert sorted(kept) == sorted(good_lines)
    for line, (label, a, b) in good_lines.items():
        assert list(kept[line]["features"].float_list.value) == [np.float32(a), np.float32(b)]
        assert label_name(kept[line], metadata["label_names"]) == label


def test_csv_labels_are_names_in_natural_order(csv_run):
    """007 and 7 are two classes; 1990-1992 are three, not 1,993; ² is a name like any other."""
    _, _, _, (metadata, _, _, result) = csv_run
    assert metadata["label_names"] == ["007", "7", "1990", "1991", "1992", "cat", "²"]
    assert result["schema"]["num_classes"] == 7


def test_csv_undecodable_oversized_and_malformed_rows_are_rejected_with_their_line(csv_run):
    path, _, bad_lines, (_, _, rejected, _) = csv_run
    assert {entry["index"]: entry["reason"] for entry in rejected} == bad_lines
    assert all(entry["path"] == str(path) and str(entry["index"]) in entry["message"] for entry in rejected)
    encoding = next(entry for entry in rejected if entry["reason"] == "bad_encoding")
    assert "csv_encoding" in encoding["message"] and "0xff" in encoding["message"]
    assert "field larger than field limit" in next(e for e in rejected if e["index"] == 12)["message"]


def test_csv_duplicate_header_names_fail_at_planning(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("label,x,x\na,1,2\n")
    with pytest.raises(ComponentError, match=r"dup.csv: duplicate column names in the header: 'x'"):
        ingest.run_ingest(f"csv:{path}", str(tmp_path / "out"), label_column="label", **QUIET)


def test_csv_other_encoding_and_numeric_label_names(tmp_path, monkeypatch):
    from ganpipe.components.sources import csv as csv_source

    monkeypatch.setattr(csv_source, "RANGE_BYTES", 5)  # rows straddle the ranges: numbered all the same
    path = tmp_path / "latin.csv"
    path.write_bytes("label,température\n0,1\n1,2\n2,3\n1,4\n".encode("cp1252"))
    metadata, records, rejected, _ = run(
        f"csv:{path}", tmp_path, ingest_params={"label_column": "label", "csv_encoding": "cp1252",
                                                 "label_names": [0, 1], "eval_fraction": 0.0})
    assert metadata["feature_names"] == ["température"] and metadata["label_names"] == ["0", "1"]
    assert [(e["index"], e["reason"]) for e in rejected] == [(4, "unknown_label")]
    assert {key.rsplit(":", 1)[1]: f["features"].float_list.value[0] for key, (_, f) in records.items()} == {
        "2": 1.0, "3": 2.0, "5": 4.0}


# ------------------------------------------------------------------------------------- npz
def test_npz_nan_and_fractional_labels_rejected_integral_floats_named(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(6, 2) + 0.25
    y = np.array([0.0, 1.0, np.nan, 1.5, 2.0, 1.0])
    np.savez(tmp_path / "data.npz", x=x, y=y)
    metadata, records, rejected, _ = run(f"npz:{tmp_path}/data.npz", tmp_path,
                                         ingest_params={"label_column": "y", "eval_fraction": 0.0})
    assert metadata["label_names"] == ["0", "1", "2"]
    assert sorted((e["index"], e["reason"]) for e in rejected) == [(2, "bad_label"), (3, "bad_label")]
    assert {e["index"]: e["message"] for e in rejected} == {
        2: "label nan is not an integer (labels are names or whole numbers)",
        3: "label 1.5 is not an integer (labels are names or whole numbers)",
    }
    kept = {int(key.rsplit("[", 1)[1][:-1]): f for key, (_, f) in records.items()}
    assert sorted(kept) == [0, 1, 4, 5]
    for i, feature in kept.items():
        assert list(feature["features"].float_list.value) == list(x[i].astype(np.float32))
        assert label_name(feature, metadata["label_names"]) == str(int(y[i]))


@pytest.mark.parametrize("labels, names", [
    (np.array([b"cat", b"dog", b"cat"]), ["cat", "dog"]),  # bytes labels: decoded, not "b'cat'"
    (np.array(["cat", "dog", "cat"]), ["cat", "dog"]),  # a string-typed label array
    (np.array([1, 0, 1]), ["0", "1"]),
])
def test_npz_label_arrays_of_every_type(tmp_path, labels, names):
    np.savez(tmp_path / "data.npz", x=np.ones((3, 2)), y=labels)
    metadata, records, rejected, _ = run(f"npz:{tmp_path}/data.npz", tmp_path,
                                         ingest_params={"label_column": "y", "eval_fraction": 0.0})
    assert metadata["label_names"] == names and rejected == []
    got = {int(key.rsplit("[", 1)[1][:-1]): label_name(f, names) for key, (_, f) in records.items()}
    expected = [v.decode() if isinstance(v, bytes) else str(v) for v in labels.tolist()]
    assert [got[i] for i in range(3)] == expected


def test_npz_label_names_as_natural_yaml_integers(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.ones((4, 2)), y=np.array([0, 1, 1, 2]))
    metadata, records, rejected, _ = run(f"npz:{tmp_path}/data.npz", tmp_path,
                                         ingest_params={"label_column": "y", "label_names": [0, 1],
                                                        "eval_fraction": 0.0})
    assert metadata["label_names"] == ["0", "1"] and len(records) == 3
    assert [(e["index"], e["reason"]) for e in rejected] == [(3, "unknown_label")]


@pytest.mark.parametrize("array, message", [
    (np.array([["a", "b"], ["c", "d"]]), r"array 'x' holds <U1 values; expected numbers"),
    (np.zeros((3, 4, 4, 2), np.uint8), r"array 'x' has 2 channels per pixel; expected 1 \(grey\), 3 \(RGB\)"),
])
def test_npz_unusable_arrays_fail_at_planning_naming_the_array(tmp_path, array, message):
    np.savez(tmp_path / "data.npz", x=array)
    with pytest.raises(ComponentError, match=rf"npz:{tmp_path}/data.npz: {message}"):
        ingest.run_ingest(f"npz:{tmp_path}/data.npz", str(tmp_path / "out"), **QUIET)


def test_npz_compressed_archive_read_by_ranges(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (600, 5, 5), np.uint8)  # three read ranges
    np.savez_compressed(tmp_path / "data.npz", x=x)
    _, records, rejected, _ = run(f"npz:{tmp_path}/data.npz", tmp_path, ingest_params={"eval_fraction": 0.1},
                                  image_size=5)
    assert rejected == [] and len(records) == 600
    for key, (_, feature) in records.items():
        i = int(key.rsplit("[", 1)[1][:-1])
        assert feature["image"].bytes_list.value[0] == x[i].tobytes()


# -------------------------------------------------------------------------------- TFRecord
@pytest.fixture(scope="module")
def tfrecord_run(tmp_path_factory):
    """One file: good PNG records with float labels, a duplicate, a fractional label, a record
    that is not a tf.Example, a protobuf cut short and a record whose data CRC fails; a second
    file cut off in its last record."""
    tmp_path = tmp_path_factory.mktemp("tfrecord")
    rng = np.random.default_rng(1)
    good = [png(rng.integers(0, 255, (4, 4), np.uint8)) for _ in range(6)]
    records = [example(image=data, label=float(i % 2)) for i, data in enumerate(good)]
    records.append(records[0])  # an identical record: kept twice, under two keys
    expected = {("part-0", i): (good[i], str(i % 2)) for i in range(6)} | {("part-0", 6): (good[0], "0")}
    records.append(example(image=good[0], label=1.5))  # 7: bad_label
    records.append(b"\xff\xff\xff\xff")  # 8: not a tf.Example
    records.append(example(image=good[1], label=1.0)[:-3])  # 9: protobuf cut short
    records.append(example(image=good[2], label=0.0))  # 10: data CRC flipped below
    path = tmp_path / "part-0.tfrecord"
    write_tfrecord(path, records)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # a byte of the last record's data
    path.write_bytes(bytes(data))
    cut = tmp_path / "part-1.tfrecord"
    write_tfrecord(cut, [example(image=good[3], label=1.0), example(image=good[4], label=0.0),
                         example(image=good[5], label=1.0)])
    cut.write_bytes(cut.read_bytes()[:-10])
    expected |= {("part-1", 0): (good[3], "1"), ("part-1", 1): (good[4], "0")}
    outcome = run(f"tfrecord:{tmp_path}/*.tfrecord", tmp_path, ingest_params={"eval_fraction": 0.3},
                  image_size=4)
    return path, expected, outcome


def test_tfrecord_float_labels_and_duplicate_records_kept_bit_for_bit(tfrecord_run):
    path, expected, (metadata, records, _, _) = tfrecord_run
    assert metadata["label_names"] == ["0", "1"]
    kept = {file_and_index(key): feature for key, (_, feature) in records.items()}
    assert sorted(kept, key=str) == sorted(expected, key=str)
    for index, (data, label) in expected.items():
        pixels = np.asarray(Image.open(io.BytesIO(data)))
        assert kept[index]["image"].bytes_list.value[0] == pixels.tobytes()
        assert label_name(kept[index], metadata["label_names"]) == label


def file_and_index(key):
    path, index = key.rsplit("#", 1)
    return os.path.basename(path).split(".")[0], int(index)


def test_tfrecord_bad_records_rejected_with_file_index_and_reason(tfrecord_run):
    path, _, (_, _, rejected, _) = tfrecord_run
    assert sorted((file_and_index(e["key"]), e["reason"]) for e in rejected) == [
        (("part-0", 7), "bad_label"), (("part-0", 8), "bad_record"), (("part-0", 9), "bad_record"),
        (("part-0", 10), "corrupt"), (("part-1", 2), "corrupt"),
    ]
    assert all(e["key"] == f"{e['path']}#{e['index']}" for e in rejected)
    assert "truncated" in next(e["message"] for e in rejected if e["path"].endswith("part-1.tfrecord"))
    assert all("tf.train.Example" in e["message"] for e in rejected if e["reason"] == "bad_record")


def test_tfrecord_gzip_file_named_tfrecord_fails_at_planning_naming_the_fix(tmp_path):
    records = [example(image=[1.0, 2.0], label=i) for i in range(5)]
    write_tfrecord(tmp_path / "data.tfrecord", records, tf.io.TFRecordOptions(compression_type="GZIP"))
    with pytest.raises(ComponentError, match=r"data.tfrecord is GZIP-compressed .*set ingest.compression: gzip"):
        ingest.run_ingest(f"tfrecord:{tmp_path}/data.tfrecord", str(tmp_path / "out"), **QUIET)
    metadata, records_out, rejected, _ = run(f"tfrecord:{tmp_path}/data.tfrecord", tmp_path,
                                             ingest_params={"compression": "gzip", "eval_fraction": 0.0})
    assert len(records_out) == 5 and rejected == [] and metadata["label_names"] == ["0", "1", "2", "3", "4"]


def test_two_channel_pixels_reject_everything_and_that_is_an_error(tmp_path):
    records = [example(image=bytes(32), image_shape=[4, 4, 2]) for _ in range(3)]
    write_tfrecord(tmp_path / "two.tfrecord", records)
    ingest.run_ingest(f"tfrecord:{tmp_path}/two.tfrecord", str(tmp_path / "raw"), **QUIET)
    with pytest.raises(ComponentError, match="all 3 records were rejected, none is usable"):
        preprocess.run_preprocess(str(tmp_path / "raw"), str(tmp_path / "out"), image_size=4,
                                  max_rejected_fraction=1.0, **QUIET)
    assert {e["reason"] for e in read_rejected(str(tmp_path / "out"))} == {"bad_shape"}


# ---------------------------------------------------------------------------------- images
def tiff(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """A labelled folder tree of 8x8 images in odd modes, a stray image in the root, and files
    that must be refused; {relative path: expected RGB pixels or reason class}."""
    root = tmp_path_factory.mktemp("tree") / "photos"
    rng = np.random.default_rng(2)
    gradient = rng.random((8, 8)).astype(np.float32)
    upright = rng.integers(0, 255, (8, 8, 3), np.uint8)
    rgba = rng.integers(0, 255, (8, 8, 4), np.uint8)
    deep = rng.integers(0, 65535, (8, 8)).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; view rotated 90 degrees clockwise
    sideways = np.rot90(upright, k=1)  # stored so that turning it clockwise shows `upright`
    alpha = rgba[..., 3:].astype(np.float64) / 255
    files = {
        "cats/float.tif": (tiff(gradient), np.repeat(np.round(gradient * 255).astype(np.uint8)[..., None], 3, 2)),
        "cats/phone.png": (png(sideways, exif=exif), upright),
        "cats/rgba.png": (png(rgba), np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)),
        "dogs/deep.png": (png(deep), np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, 2)),
        "dogs/plain.png": (png(upright), upright),
        "dogs/too_wide.tif": (tiff(np.full((8, 8), 70000, np.int32)), "bad_mode"),
        "dogs/float_range.tif": (tiff(gradient * 4), "bad_mode"),
        "dogs/huge.png": (png(np.zeros((8, 100), np.uint8)), "too_large"),
        "dogs/tiny.png": (png(np.zeros((2, 8), np.uint8)), "too_small"),
        "stray.png": (png(upright), "unlabelled"),
    }
    for name, (data, _) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root, {name: expected for name, (_, expected) in files.items()}


IMAGE_OPTIONS = dict(image_size=8, channels=3, resize_method="nearest", max_image_pixels=500, min_image_size=4)


@pytest.fixture(scope="module")
def image_run(image_tree, tmp_path_factory):
    root, _ = image_tree
    return run(f"images:{root}", tmp_path_factory.mktemp("images"), **IMAGE_OPTIONS)


def test_images_odd_modes_exif_and_alpha_decoded_right(image_tree, image_run):
    root, expected = image_tree
    metadata, records, _, _ = image_run
    kept = {os.path.relpath(key, root): f for key, (_, f) in records.items()}
    good = {name: pixels for name, pixels in expected.items() if not isinstance(pixels, str)}
    assert sorted(kept) == sorted(good)
    for name, pixels in good.items():
        got = np.frombuffer(kept[name]["image"].bytes_list.value[0], np.uint8).reshape(8, 8, 3)
        np.testing.assert_array_equal(got, pixels, err_msg=name)
        assert label_name(kept[name], metadata["label_names"]) == name.split("/")[0]


def test_images_refused_with_reason_and_the_stray_root_image_is_not_silently_unlabelled(image_tree, image_run):
    root, expected = image_tree
    _, _, rejected, _ = image_run
    assert {os.path.relpath(e["path"], root): e["reason"] for e in rejected} == {
        name: reason for name, reason in expected.items() if isinstance(reason, str)
    }
    messages = {os.path.relpath(e["path"], root): e["message"] for e in rejected}
    assert "preprocess.max_image_pixels 500" in messages["dogs/huge.png"]
    assert "preprocess.unlabelled: keep" in messages["stray.png"]


def test_images_options_keep_unlabelled_background_and_reject_wide_modes(image_tree, tmp_path):
    root, expected = image_tree
    options = dict(IMAGE_OPTIONS, unlabelled="keep", background=[0, 0, 0], wide_modes="reject")
    _, records, rejected, _ = run(f"images:{root}", tmp_path, **options)
    reasons_by_name = {os.path.relpath(e["path"], root): e["reason"] for e in rejected}
    assert reasons_by_name == {"cats/float.tif": "bad_mode", "dogs/deep.png": "bad_mode",
                               "dogs/too_wide.tif": "bad_mode", "dogs/float_range.tif": "bad_mode",
                               "dogs/huge.png": "too_large", "dogs/tiny.png": "too_small"}
    kept = {os.path.relpath(key, root): f for key, (_, f) in records.items()}
    assert kept["stray.png"]["label"].int64_list.value[0] == -1
    rgba = np.asarray(Image.open(root / "cats/rgba.png")).astype(np.float64)
    over_black = np.round(rgba[..., :3] * rgba[..., 3:] / 255).astype(np.uint8)
    got = np.frombuffer(kept["cats/rgba.png"]["image"].bytes_list.value[0], np.uint8).reshape(8, 8, 3)
    np.testing.assert_array_equal(got, over_black)


# ----------------------------------------------------------------------------------- split
def write_pngs(root, count, seed):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"img{i:02d}.png").write_bytes(png(rng.integers(0, 255, (3, 3), np.uint8)))


def split_by_name(output):
    return {os.path.basename(key): split for key, (split, _) in read_records(output).items()}


def test_split_is_the_same_for_every_spelling_and_location_of_the_source(tmp_path, monkeypatch):
    write_pngs(tmp_path / "imgs", 28, seed=3)
    shutil.copytree(tmp_path / "imgs", tmp_path / "elsewhere" / "moved")
    monkeypatch.chdir(tmp_path)
    spellings = ["imgs", "./imgs/", str(tmp_path / "imgs"), f"{tmp_path}//imgs", str(tmp_path / "elsewhere/moved")]
    splits = []
    for i, spelling in enumerate(spellings):
        ingest.run_ingest(f"images:{spelling}", str(tmp_path / f"out{i}"), eval_fraction=0.3, **QUIET)
        splits.append(split_by_name(str(tmp_path / f"out{i}")))
    assert len(splits[0]) == 28 and 0 < list(splits[0].values()).count("eval") < 28
    assert all(split == splits[0] for split in splits[1:])


def test_split_keeps_identical_files_together_and_records_its_rule(tmp_path):
    root = tmp_path / "dups"
    write_pngs(root, 20, seed=4)
    for i in range(12):  # the same picture under another name
        shutil.copy(root / f"img{i:02d}.png", root / f"copy{i:02d}.png")
    metadata = ingest.run_ingest(f"images:{root}", str(tmp_path / "out"), eval_fraction=0.5, **QUIET)
    splits = split_by_name(str(tmp_path / "out"))
    assert all(splits[f"img{i:02d}.png"] == splits[f"copy{i:02d}.png"] for i in range(12))
    assert metadata["split"]["split_key"] == "path" and metadata["split"]["salt"] == ""
    assert "blake2b-128" in metadata["split"]["rule"]
    salted = ingest.run_ingest(f"images:{root}", str(tmp_path / "salted"), eval_fraction=0.5,
                               split_salt="another", **QUIET)
    assert salted["split"]["salt"] == "another" and split_by_name(str(tmp_path / "salted")) != splits


def test_empty_train_split_is_an_error_naming_the_split_rule(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a\n1\n")
    with pytest.raises(ComponentError, match=r"train split is empty.*split rule .*blake2b-128"):
        ingest.run_ingest(f"csv:{path}", str(tmp_path / "out"), eval_fraction=0.9, split_salt="2", **QUIET)


def test_content_split_key_follows_the_pictures_not_their_names(tmp_path):
    write_pngs(tmp_path / "a", 24, seed=5)
    renamed = tmp_path / "b" / "deeper"
    renamed.mkdir(parents=True)
    for i in range(24):  # every picture under another name, in another tree
        shutil.copy(tmp_path / "a" / f"img{i:02d}.png", renamed / f"photo-{23 - i}.png")
    options = dict(eval_fraction=0.4, split_key="content", **QUIET)
    metadata = ingest.run_ingest(f"images:{tmp_path / 'a'}", str(tmp_path / "out-a"), **options)
    ingest.run_ingest(f"images:{tmp_path / 'b'}", str(tmp_path / "out-b"), **options)
    by_content = {}
    for output in ("out-a", "out-b"):
        for key, (split, _) in read_records(str(tmp_path / output)).items():
            by_content.setdefault(open(key, "rb").read(), set()).add(split)
    assert len(by_content) == 24 and all(len(splits) == 1 for splits in by_content.values())
    assert {next(iter(s)) for s in by_content.values()} == {"train", "eval"}
    assert metadata["split"]["split_key"] == "content" and metadata["split"]["key"] == "record content"


@pytest.mark.parametrize("label_names, message", [
    ([1, "1"], r"ingest.label_names: '1' given more than once"),
    ([0, 0.5], r"ingest.label_names: label 0.5 is not an integer"),
    (["a", ""], r"ingest.label_names: '' means 'no label' and cannot name a class"),
])
def test_label_names_are_checked_before_anything_runs(tmp_path, label_names, message):
    np.savez(tmp_path / "data.npz", x=np.ones((2, 2)), y=np.array([0, 1]))
    with pytest.raises(ComponentError, match=message):
        ingest.run_ingest(f"npz:{tmp_path}/data.npz", str(tmp_path / "out"), label_column="y",
                          label_names=label_names, **QUIET)
