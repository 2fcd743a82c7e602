"""Preprocess: decoding, layout, bad-input rules with exact counts, schema and statistics vs numpy."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from ganpipe.components import ingest, preprocess
from ganpipe.infra import beamio
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.infra.example_proto import Example

QUIET = dict(log=lambda line: None)
GOOD_IMAGES = 30


def read_processed(output_dir, split):
    """{key: feature map} of one split of Preprocess's output."""
    records = {}
    for path in beamio.shard_paths(os.path.join(output_dir, split)):
        for serialized in beamio.iter_records(path):
            feature = Example.FromString(serialized).features.feature
            records[feature["key"].bytes_list.value[0].decode()] = feature
    return records


def image_of(feature, shape, name="image"):
    return np.frombuffer(feature[name].bytes_list.value[0], np.uint8).reshape(shape)


def label_of(feature):
    return feature["label"].int64_list.value[0]


def read_rejected(output_dir):
    with open(os.path.join(output_dir, preprocess.REJECTED_FILE)) as f:
        return {entry["key"]: entry for entry in map(json.loads, f)}


def assert_statistics_match(stats, values, labels, num_classes):
    """``values`` [N, K] of one split against the statistics document of that split."""
    np.testing.assert_allclose(stats["mean"], values.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], values.std(axis=0), rtol=1e-9)
    np.testing.assert_array_equal(stats["min"], values.min(axis=0))
    np.testing.assert_array_equal(stats["max"], values.max(axis=0))
    assert stats["label_counts"] == np.bincount(labels[labels >= 0], minlength=num_classes).tolist()
    assert stats["unlabelled"] == int((labels < 0).sum())


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """30 good images of varied formats, modes and sizes in two classes, plus 4 bad files."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "L"), ("gif", "P"), ("png", "RGBA"), ("png", "L")]
    for i in range(GOOD_IMAGES):
        extension, mode = formats[i % len(formats)]
        height, width = rng.integers(10, 40, size=2)
        pixels = rng.integers(0, 255, (height, width, 4), np.uint8)
        image = Image.fromarray(pixels, "RGBA").convert(mode)
        (root / f"class_{i % 2}").mkdir(exist_ok=True)
        image.save(root / f"class_{i % 2}" / f"img{i:02d}.{extension}")
    png = (root / "class_0" / "img00.png").read_bytes()
    bad = {
        "class_0/empty.png": b"",
        "class_0/truncated.png": png[: len(png) // 2],
        "class_1/fake.jpg": bytes(rng.integers(0, 255, 500, np.uint8)),
        "class_1/notes.txt": b"not a picture",
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    examples = str(tmp_path_factory.mktemp("examples"))
    ingest.run_ingest(f"images:{root}", examples, eval_fraction=0.3, **QUIET)
    return root, examples, bad


@pytest.fixture(scope="module")
def folder_run(image_folder, tmp_path_factory):
    root, examples, _ = image_folder
    output = str(tmp_path_factory.mktemp("processed"))
    result = preprocess.run_preprocess(
        examples, output, image_size=16, channels=3, resize_method="bicubic", center_crop=True,
        max_rejected_fraction=0.5, **QUIET,
    )
    return root, output, result


def expected_image(path, size, mode, method):
    image = Image.open(path)
    image.load()
    if image.mode == "RGBA":  # transparency is composited over the default white background
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    image = image.convert(mode)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), method)
    return np.asarray(image).reshape(size, size, -1)


def test_bad_files_are_listed_with_reasons_and_good_ones_all_kept(image_folder, folder_run):
    root, output, result = folder_run
    rejected = read_rejected(output)
    assert {os.path.relpath(key, root) for key in rejected} == set(image_folder[2])
    reasons = {os.path.relpath(key, root): (entry["reason"], entry["message"]) for key, entry in rejected.items()}
    assert reasons["class_0/empty.png"] == ("not_an_image", "zero-byte file")
    assert reasons["class_0/truncated.png"][0] == "undecodable"
    assert reasons["class_0/truncated.png"][1].startswith("undecodable image")
    assert reasons["class_1/fake.jpg"] == ("not_an_image", "not an image (unrecognised format)")
    assert reasons["class_1/notes.txt"] == ("not_an_image", "not an image (unrecognised format)")
    assert all(entry["path"] == key and entry["index"] is None for key, entry in rejected.items())

    kept = {**read_processed(output, "train"), **read_processed(output, "eval")}
    assert len(kept) == GOOD_IMAGES and not set(kept) & set(rejected)
    assert result["statistics"]["records"] == {"read": GOOD_IMAGES + 4, "written": GOOD_IMAGES, "rejected": 4}


def test_images_are_cropped_resized_and_labelled(folder_run):
    root, output, _ = folder_run
    kept = {**read_processed(output, "train"), **read_processed(output, "eval")}
    for key, feature in kept.items():
        expected = expected_image(key, 16, "RGB", Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(image_of(feature, (16, 16, 3)), expected, err_msg=key)
        assert label_of(feature) == int(os.path.basename(os.path.dirname(key))[-1])
        assert "image_lowres" not in feature


def test_schema_and_statistics_match_numpy(folder_run):
    _, output, result = folder_run
    schema = json.load(open(os.path.join(output, preprocess.SCHEMA_FILE)))
    assert schema == result["schema"]
    assert schema["kind"] == "image" and schema["shape"] == [16, 16, 3] and schema["dtype"] == "uint8"
    assert schema["channels"] == 3 and schema["num_classes"] == 2
    assert schema["label_names"] == ["class_0", "class_1"] and schema["lowres_shape"] is None
    statistics = json.load(open(os.path.join(output, preprocess.STATISTICS_FILE)))
    for split in ingest.SPLITS:
        records = read_processed(output, split)
        assert schema["counts"][split] == len(records) == statistics["splits"][split]["count"]
        pixels = np.stack([image_of(f, (16, 16, 3)) for f in records.values()]).reshape(-1, 3).astype(np.float64)
        labels = np.array([label_of(f) for f in records.values()])
        assert_statistics_match(statistics["splits"][split], pixels, labels, 2)


def test_statistics_tensorboard_text_summary(folder_run):
    _, output, _ = folder_run
    accumulator = event_accumulator.EventAccumulator(
        os.path.join(output, "logs"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    (event,) = accumulator.Tensors("statistics")
    text = event.tensor_proto.string_val[0].decode()
    assert "**train**" in text and "| red |" in text and "class_1:" in text


def test_too_many_rejected_records_fail_with_count_fraction_and_listing(image_folder, tmp_path):
    output = str(tmp_path / "strict")
    with pytest.raises(ComponentError) as error:
        preprocess.run_preprocess(image_folder[1], output, **QUIET)
    message = str(error.value)
    assert "rejected 4 of 34 records (11.8% > max_rejected_fraction 1.0%)" in message
    assert os.path.join(output, "rejected.jsonl") in message


def test_digits_default_upsampled_with_lowres_copy(tmp_path):
    from sklearn.datasets import load_digits

    examples, output = str(tmp_path / "raw"), str(tmp_path / "processed")
    ingest.run_ingest("digits", examples, **QUIET)
    result = preprocess.run_preprocess(examples, output, lowres_factor=4, **QUIET)

    assert result["schema"]["shape"] == [32, 32, 1] and result["schema"]["lowres_shape"] == [8, 8, 1]
    assert sum(result["schema"]["counts"].values()) == 1797
    digits = load_digits()
    train = read_processed(output, "train")
    for key in list(train)[:20]:
        index = int(key.split("/")[1])
        source = Image.fromarray(np.round(digits.images[index] * 255 / 16).astype(np.uint8))
        high = source.resize((32, 32), Image.Resampling.BILINEAR)
        low = high.resize((8, 8), Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(image_of(train[key], (32, 32)), np.asarray(high))
        np.testing.assert_array_equal(image_of(train[key], (8, 8), "image_lowres"), np.asarray(low))
        assert label_of(train[key]) == digits.target[index]
    pixels = np.stack([image_of(f, (32, 32)) for f in train.values()]).reshape(-1, 1).astype(np.float64)
    labels = np.array([label_of(f) for f in train.values()])
    assert_statistics_match(result["statistics"]["splits"]["train"], pixels, labels, 10)


@pytest.fixture(scope="module")
def csv_examples(tmp_path_factory):
    directory = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(3)
    values = rng.normal(5.0, 2.0, size=(40, 3)).round(3)
    rows = [["x", "y", "z", "label"]] + [[*map(str, v), "ab"[i % 2]] for i, v in enumerate(values)]
    rows += [["1", "nan", "2", "a"], ["1", "", "2", "a"], ["1", "2", "zz", "b"], ["1", "2", "b"],
             ["1", "2", "3", "c"], ["inf", "2", "3", "a"]]
    with open(directory / "table.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    examples = str(directory / "examples")
    ingest.run_ingest(f"csv:{directory}/table.csv", examples, label_column="label",
                      label_names=["a", "b"], eval_fraction=0.25, **QUIET)
    return directory, examples, values


def test_vectors_rejects_nan_missing_and_bad_rows_and_normalises(csv_examples, tmp_path):
    directory, examples, values = csv_examples
    output = str(tmp_path / "processed")
    result = preprocess.run_preprocess(examples, output, max_rejected_fraction=0.2, **QUIET)

    rejected = read_rejected(output)
    reasons = {key.rsplit(":", 1)[1]: (entry["reason"], entry["message"]) for key, entry in rejected.items()}
    assert reasons == {
        "42": ("bad_value", "NaN or infinite value in column 'y'"),
        "43": ("bad_value", "line 43: missing value in column 'y'"),
        "44": ("bad_value", "line 44: column 'z': 'zz' is not a number"),
        "45": ("bad_row", "line 45: 3 cells, expected 4"),
        "46": ("unknown_label", "label 'c' is not in label_names"),
        "47": ("bad_value", "NaN or infinite value in column 'x'"),
    }
    assert all(entry["index"] == int(key.rsplit(":", 1)[1]) for key, entry in rejected.items())
    train = read_processed(output, "train")
    rows = {int(key.rsplit(":", 1)[1]) - 2: feature for key, feature in train.items()}
    train_values = values[sorted(rows)].astype(np.float32)
    for row, feature in rows.items():
        np.testing.assert_array_equal(feature["features"].float_list.value, values[row].astype(np.float32))
        assert label_of(feature) == row % 2
    schema = result["schema"]
    assert schema["kind"] == "vector" and schema["shape"] == [3] and schema["dtype"] == "float32"
    assert schema["feature_names"] == ["x", "y", "z"] and schema["channels"] is None
    np.testing.assert_allclose(schema["normalization"]["mean"], train_values.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(schema["normalization"]["std"], train_values.astype(np.float64).std(0), rtol=1e-9)
    labels = np.array([row % 2 for row in sorted(rows)])
    assert_statistics_match(result["statistics"]["splits"]["train"], train_values.astype(np.float64), labels, 2)
    assert result["statistics"]["records"] == {"read": 46, "written": 40, "rejected": 6}


def test_raw_pixels_of_the_wrong_shape_and_missing_images_are_rejected(tmp_path):
    good = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    records = [
        {"bytes_features": [("image", [good.tobytes()])], "int_features": [("image_shape", [4, 4, 1]), ("label", [1])]},
        {"bytes_features": [("image", [good.tobytes()])], "int_features": [("image_shape", [4, 4, 3])]},
        {"bytes_features": [("image", [bytes(32)])], "int_features": [("image_shape", [4, 4, 2])]},
        {"bytes_features": [("other", [b"x"])]},
        {"bytes_features": [("image", [good.tobytes()])], "int_features": [("image_shape", [4, 4]), ("label", [7])]},
    ]
    with open(tmp_path / "in.tfrecord", "wb") as f:
        beamio.write_tfrecords(f, (beamio.serialize_example(**r) for r in records))
    examples, output = str(tmp_path / "raw"), str(tmp_path / "out")
    ingest.run_ingest(f"tfrecord:{tmp_path}/in.tfrecord", examples, label_names=[0, 1], **QUIET)

    result = preprocess.run_preprocess(examples, output, image_size=4, max_rejected_fraction=1.0, **QUIET)

    rejected = {entry["index"]: (entry["reason"], entry["message"]) for entry in read_rejected(output).values()}
    assert rejected == {
        1: ("bad_shape", "16 bytes of pixels for shape [4, 4, 3]; expected [H, W] or [H, W, C] with C = 1, 3 or 4"),
        2: ("bad_shape", "32 bytes of pixels for shape [4, 4, 2]; expected [H, W] or [H, W, C] with C = 1, 3 or 4"),
        3: ("bad_record", f"record 3 of {tmp_path}/in.tfrecord has no feature 'image'"),
        4: ("unknown_label", "label '7' is not in label_names"),
    }
    (kept,) = {**read_processed(output, "train"), **read_processed(output, "eval")}.values()
    np.testing.assert_array_equal(image_of(kept, (4, 4, 1)), good)
    assert label_of(kept) == 1 and result["schema"]["label_names"] == ["0", "1"]


def test_component_executor_writes_each_output_to_its_own_directory(csv_examples, tmp_path):
    _, examples, _ = csv_examples
    outputs = {name: Artifact(kind, str(tmp_path / name))
               for name, kind in preprocess.COMPONENT.outputs.items()}
    params = preprocess.COMPONENT.resolve_parameters({"max_rejected_fraction": 0.5})
    context = ExecutionContext("test", "Preprocess", 2, beam_args=[], log=lambda line: None)

    preprocess.COMPONENT.execute({"examples": Artifact("Examples", examples)}, outputs, params, context)

    assert os.path.exists(outputs["schema"].path("schema.json"))
    assert os.path.exists(outputs["statistics"].path("statistics.json"))
    assert os.path.exists(outputs["examples"].path("rejected.jsonl"))
    assert outputs["examples"].properties["rejected"] == 6
    assert outputs["schema"].properties == {"kind": "vector", "shape": [3]}
    with pytest.raises(ValueError, match="preprocess.lowres_factor"):
        preprocess.COMPONENT.resolve_parameters({"lowres_factor": 3}, section="preprocess")


def test_fixed_shard_counts_per_split(csv_examples, tmp_path):
    output = str(tmp_path / "sharded")
    result = preprocess.run_preprocess(csv_examples[1], output, num_shards=3, max_rejected_fraction=0.2, **QUIET)
    assert sorted(os.listdir(output)) == ["eval", "logs", "rejected.jsonl", "schema.json", "schema.pbtxt",
                                          "statistics.json", "statistics.pb", "train"]
    for split in ingest.SPLITS:
        assert sorted(os.listdir(os.path.join(output, split))) == [
            f"data-{i:05d}-of-00003.tfrecord" for i in range(3)
        ]
        assert len(read_processed(output, split)) == result["schema"]["counts"][split]
    assert result["statistics"]["records"] == {"read": 46, "written": 40, "rejected": 6}


def test_a_lost_record_is_detected(csv_examples, tmp_path):
    """Ingest's metadata promises one more record than its shards hold: Preprocess must notice."""
    import shutil

    examples = str(tmp_path / "examples")
    shutil.copytree(csv_examples[1], examples)
    metadata = ingest.load_metadata(examples)
    metadata["counts"]["train"] += 1
    Artifact("Examples", examples).write_json(ingest.METADATA_FILE, metadata)
    with pytest.raises(ComponentError, match="Ingest wrote 47 records but 46 were read"):
        preprocess.run_preprocess(examples, str(tmp_path / "out"), max_rejected_fraction=1.0, **QUIET)
