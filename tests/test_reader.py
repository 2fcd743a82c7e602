"""The tf.data reader over Preprocess's shards: values, shapes, labels, batching, shuffling."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from ganpipe.components import ingest, preprocess, reader
from ganpipe.infra import beamio
from ganpipe.infra.example_proto import Example

QUIET = dict(log=lambda line: None)


def processed_records(output, split):
    """(images or vectors, labels) of a split in shard order, decoded with numpy."""
    values, labels = [], []
    for path in beamio.shard_paths(os.path.join(output, split)):
        for serialized in beamio.iter_records(path):
            feature = Example.FromString(serialized).features.feature
            if "image" in feature:
                values.append(np.frombuffer(feature["image"].bytes_list.value[0], np.uint8))
            else:
                values.append(np.asarray(feature["features"].float_list.value, np.float32))
            labels.append(feature["label"].int64_list.value[0])
    return np.stack(values), np.array(labels)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reader_images")
    rng = np.random.default_rng(0)
    np.savez(directory / "data.npz", x=rng.integers(0, 255, (48, 8, 8, 3), np.uint8), y=np.arange(48) % 5)
    examples, output = str(directory / "raw"), str(directory / "processed")
    ingest.run_ingest(f"npz:{directory}/data.npz", examples, label_column="y", eval_fraction=0.25, **QUIET)
    preprocess.run_preprocess(examples, output, image_size=8, channels=3, lowres_factor=2, **QUIET)
    return output, reader.load_schema(output)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reader_vectors")
    data = np.random.default_rng(1).normal([10, -3], [4, 0.5], size=(40, 2))
    np.savez(directory / "data.npz", x=data)
    examples, output = str(directory / "raw"), str(directory / "processed")
    ingest.run_ingest(f"npz:{directory}/data.npz", examples, **QUIET)
    preprocess.run_preprocess(examples, output, **QUIET)
    return output, reader.load_schema(output)


def test_images_scaled_to_unit_range_with_labels_in_shard_order(images):
    output, schema = images
    expected, expected_labels = processed_records(output, "train")
    dataset = reader.make_dataset(output, schema, batch_size=7, shuffle=False, with_labels=True, drop_remainder=False)
    batches = list(dataset.as_numpy_iterator())
    x = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert x.dtype == np.float32 and x.shape == (schema["counts"]["train"], 8, 8, 3)
    np.testing.assert_allclose(x, expected.reshape(x.shape) / 127.5 - 1.0, atol=1e-6)
    assert x.min() >= -1.0 and x.max() <= 1.0
    np.testing.assert_array_equal(labels, expected_labels)
    assert labels.dtype == np.int32


def test_batches_drop_the_remainder_and_repeat(images):
    output, schema = images
    count = schema["counts"]["eval"]
    once = list(reader.make_dataset(output, output, split="eval", batch_size=5, seed=0).as_numpy_iterator())
    assert len(once) == count // 5 and all(batch.shape == (5, 8, 8, 3) for batch in once)
    repeated = reader.make_dataset(output, schema, split="eval", batch_size=5, repeat=True, seed=0)
    assert len(list(repeated.take(3 * len(once) + 1).as_numpy_iterator())) == 3 * len(once) + 1


def test_shuffle_is_reproducible_with_a_seed(images):
    output, schema = images

    def epoch(**options):
        dataset = reader.make_dataset(output, schema, batch_size=16, drop_remainder=False, **options)
        return np.concatenate(list(dataset.as_numpy_iterator())).reshape(schema["counts"]["train"], -1)

    first, again, ordered = epoch(seed=7), epoch(seed=7), epoch(shuffle=False)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, ordered)
    sort_rows = lambda rows: rows[np.lexsort(rows.T)]  # noqa: E731
    np.testing.assert_array_equal(sort_rows(first), sort_rows(ordered))  # same records, new order


def test_lowres_pairs(images):
    output, schema = images
    low, high = next(iter(reader.make_dataset(output, schema, batch_size=4, with_lowres=True)))
    assert low.shape == (4, 4, 4, 3) and high.shape == (4, 8, 8, 3)
    assert low.dtype == tf.float32 and float(tf.reduce_max(tf.abs(low))) <= 1.0


def test_photo_patches_give_lowres_highres_pairs(tmp_path):
    examples, output = str(tmp_path / "raw"), str(tmp_path / "processed")
    ingest.run_ingest("photos", examples, patch_size=64, patch_stride=64, **QUIET)
    preprocess.run_preprocess(examples, output, image_size=64, channels=3, lowres_factor=4, **QUIET)
    schema = reader.load_schema(output)
    assert schema["counts"] == {"train": 2 * 6 * 9, "eval": 2 * 6}  # 6 rows; 9 train + 1 eval column
    pairs = reader.make_dataset(output, schema, split="eval", batch_size=12, shuffle=False, with_lowres=True)
    ((low, high),) = list(pairs.as_numpy_iterator())
    assert low.shape == (12, 16, 16, 3) and high.shape == (12, 64, 64, 3)
    # The low-resolution copy is a 4x downscale of the patch: their means agree closely.
    np.testing.assert_allclose(low.mean(axis=(1, 2)), high.mean(axis=(1, 2)), atol=0.02)
    assert high.std() > 0.1  # real photographs, not a flat fill


def test_vectors_standardised_with_schema_normalization(vectors):
    output, schema = vectors
    expected, _ = processed_records(output, "train")
    x = np.concatenate(list(reader.make_dataset(output, schema, batch_size=64, shuffle=False,
                                                drop_remainder=False).as_numpy_iterator()))
    np.testing.assert_allclose(x, (expected - expected.mean(0)) / expected.std(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1.0, atol=1e-4)


def test_clear_errors(images, vectors, tmp_path):
    output, schema = images
    with pytest.raises(FileNotFoundError, match="no \\*.tfrecord shards"):
        reader.make_dataset(output, schema, split="test")
    with pytest.raises(ValueError, match="lowres_shape"):
        reader.make_dataset(vectors[0], vectors[1], with_lowres=True)
    with pytest.raises(FileNotFoundError, match="no schema"):
        reader.load_schema(str(tmp_path))


# ------------------------------------------------------- file order and the in-memory cache


def copy_in_shards(output, split, destination, shards):
    """``output``'s ``split`` rewritten as ``shards`` files of consecutive records, with its schema."""
    records = [serialized for path in beamio.shard_paths(os.path.join(output, split))
               for serialized in beamio.iter_records(path)]
    os.makedirs(os.path.join(destination, split))
    per_shard = -(-len(records) // shards)
    for k in range(shards):
        with tf.io.TFRecordWriter(os.path.join(destination, split, f"part-{k:03d}.tfrecord")) as writer:
            for serialized in records[k * per_shard:(k + 1) * per_shard]:
                writer.write(serialized)
    schema = reader.load_schema(output)
    with open(os.path.join(destination, reader.SCHEMA_FILE), "w") as f:
        json.dump(schema, f)
    return str(destination), schema


def test_file_order_is_shuffled_per_seed_beyond_the_record_buffer(images, tmp_path, monkeypatch):
    """With a record shuffle buffer of 1 only the file-level shuffle reorders: the first records
    then come from other files for other seeds (a data set larger than the buffer relies on it)."""
    monkeypatch.setattr(reader, "SHUFFLE_BUFFER", 1)
    root, schema = copy_in_shards(images[0], "train", tmp_path / "sharded", shards=12)
    count = schema["counts"]["train"]

    def epoch(**options):
        dataset = reader.make_dataset(root, schema, batch_size=count, drop_remainder=False, **options)
        return next(iter(dataset)).numpy().reshape(count, -1)

    orders = [epoch(seed=seed)[:4].tobytes() for seed in range(4)]
    assert len(set(orders)) > 1
    assert epoch(seed=2)[:4].tobytes() == orders[2]


def is_cached(root, schema, **options):
    """Whether epochs after the first come from memory: they survive the shards' deletion."""
    dataset = reader.make_dataset(root, schema, batch_size=schema["counts"]["train"], shuffle=False, repeat=True,
                                  drop_remainder=False, **options)
    epochs = iter(dataset)
    next(epochs)
    for path in tf.io.gfile.glob(os.path.join(root, "train", "*.tfrecord")):
        os.remove(path)
    try:
        for _ in range(4):
            next(epochs)
    except tf.errors.NotFoundError:
        return False
    return True


@pytest.mark.parametrize("fixture, with_lowres, record_bytes", [("images", False, 8 * 8 * 3),
                                                                 ("images", True, 8 * 8 * 3 + 4 * 4 * 3),
                                                                 ("vectors", False, 2 * 4)])
def test_records_are_cached_in_memory_up_to_the_limit(fixture, with_lowres, record_bytes, request, tmp_path,
                                                      monkeypatch):
    output, schema = request.getfixturevalue(fixture)
    limit = schema["counts"]["train"] * record_bytes  # uint8 pixels, float32 features
    for name, bytes_allowed, cached in (("at", limit, True), ("under", limit - 1, False)):
        monkeypatch.setattr(reader, "CACHE_LIMIT_BYTES", bytes_allowed)
        root, _ = copy_in_shards(output, "train", tmp_path / name, shards=2)
        assert is_cached(root, schema, with_lowres=with_lowres) == cached, name


def test_cache_is_on_by_default_and_can_be_turned_off(images, tmp_path):
    assert is_cached(*copy_in_shards(images[0], "train", tmp_path / "default", shards=2))
    assert not is_cached(*copy_in_shards(images[0], "train", tmp_path / "off", shards=2), cache=False)


def test_the_last_partial_batch_is_dropped_by_default(images):
    output, schema = images
    count = schema["counts"]["train"]
    batch_size = next(size for size in range(5, count) if count % size)
    batches = list(reader.make_dataset(output, schema, batch_size=batch_size, shuffle=False).as_numpy_iterator())
    assert len(batches) == count // batch_size and {len(batch) for batch in batches} == {batch_size}
