"""Ingest + Preprocess on several Beam runners and filesystems: every run must hold the same
records as the in-process FnApiRunner run. Servers (worker pool, GCS emulator) are started here
on 127.0.0.1; nothing is mocked."""
from __future__ import annotations

import collections
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ganpipe.components import ingest, preprocess, reader
from ganpipe.infra import beamio, storage
from ganpipe.components.base import ComponentError
from ganpipe.pipeline.config import ConfigError, load_config

QUIET = {"log": lambda line: None}
IMAGE_SIZE = 8


def run_both(root: str, beam_args=()) -> dict:
    raw, processed = storage.join(root, "raw"), storage.join(root, "processed")
    metadata = ingest.run_ingest("digits", raw, beam_args=beam_args, **QUIET)
    result = preprocess.run_preprocess(raw, processed, image_size=IMAGE_SIZE, beam_args=beam_args, **QUIET)
    return {"raw": raw, "processed": processed, "metadata": metadata, "result": result}


def records(directory: str) -> dict[str, collections.Counter]:
    """{split: multiset of serialized records} of a step's shards, read through the filesystem
    layer with every CRC checked."""
    found = {}
    for split in ingest.SPLITS:
        items = [r for path in beamio.shard_paths(storage.join(directory, split)) for r in beamio.iter_records(path)]
        assert not any(isinstance(item, beamio.Corrupt) for item in items)
        found[split] = collections.Counter(items)
    return found


def assert_same_records(run: dict, baseline: dict) -> None:
    for step in ("raw", "processed"):
        assert records(run[step]) == records(baseline[step]), step
    assert run["metadata"]["counts"] == baseline["metadata"]["counts"]
    assert run["result"]["statistics"]["records"] == baseline["result"]["statistics"]["records"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return run_both(str(tmp_path_factory.mktemp("in_process")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(args: list[str], port: int, env=None):
    """A server process started for one test, waited for on its port, then stopped."""
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{args[2]} did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


# ------------------------------------------------------------------------------- runners
def test_baseline_is_complete(baseline):
    """The in-process run itself: shards, listing, summaries, each split's records counted."""
    counts = baseline["metadata"]["counts"]
    assert sum(counts.values()) == 1797 and baseline["metadata"]["read"] == 1797
    processed = records(baseline["processed"])
    assert {split: sum(c.values()) for split, c in processed.items()} == counts
    assert baseline["result"]["statistics"]["records"] == {"read": 1797, "written": 1797, "rejected": 0}
    assert storage.read_bytes(os.path.join(baseline["processed"], "rejected.jsonl")) == b""
    assert not any(name.startswith(".") for name in os.listdir(baseline["processed"]))


@pytest.mark.slow
def test_multi_processing_workers_write_the_same_records(baseline, tmp_path):
    args = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert_same_records(run_both(str(tmp_path), args), baseline)


@pytest.mark.slow
def test_portable_runner_with_sdk_workers_in_other_processes(baseline, tmp_path):
    """The path Flink, Spark and Dataflow use: the pipeline is serialised to a job service and
    run by SDK workers that a worker pool starts as separate processes."""
    port = free_port()
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    pool = [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"]
    with server(pool, port, env) as workers:
        args = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                f"--environment_config=127.0.0.1:{port}"]
        run = run_both(str(tmp_path), args)
        workers.terminate()
        log = workers.stderr.read().decode()
    assert_same_records(run, baseline)
    assert "Starting worker" in log or "worker_id" in log  # the work ran in the pool's workers


def test_dask_runner_is_rejected_with_what_it_lacks(tmp_path):
    with pytest.raises(ComponentError, match="finish_bundle.*dropped.*one bag.*NotImplementedError"):
        ingest.run_ingest("digits", str(tmp_path / "raw"), beam_args=["--runner=DaskRunner"], **QUIET)
    assert not os.path.exists(tmp_path / "raw" / "train")


def test_local_runner_is_named_explicitly():
    options = beamio.pipeline_options([])
    assert options.view_as(beamio.StandardOptions).runner == beamio.LOCAL_RUNNER
    chosen = beamio.pipeline_options(["--runner=PortableRunner"])
    assert chosen.view_as(beamio.StandardOptions).runner == "PortableRunner"


# -------------------------------------------------------------------------- filesystems
# gs:// roots on conftest's gcs_bucket (a GCS emulator for the session)
@pytest.mark.slow
def test_gs_root_holds_the_same_records(baseline, gcs_bucket, tmp_path):
    run = run_both(f"{gcs_bucket}/data")
    assert_same_records(run, baseline)
    processed = run["processed"]
    assert storage.read_json(f"{processed}/schema.json") == baseline["result"]["schema"]
    assert storage.read_bytes(f"{processed}/statistics.pb") == storage.read_bytes(
        os.path.join(baseline["processed"], "statistics.pb"))
    assert not os.path.exists("gs:") and not os.path.exists(tmp_path / "gs:")


def test_config_accepts_installed_schemes_and_names_the_missing_one(tmp_path, monkeypatch):
    pytest.importorskip("apache_beam.io.gcp.gcsio")
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["pipeline.root=gs://bucket/runs/"])
    assert config.root == "gs://bucket/runs"
    assert config.metadata == os.path.abspath("ganpipe_runs")  # SQLite and locks stay local
    local = load_config(None, [f"pipeline.root={tmp_path}/r"])
    assert local.metadata == local.root == f"{tmp_path}/r"
    with pytest.raises(ConfigError, match=r"pipeline.root: .*scheme hdfs2://"):
        load_config(None, ["pipeline.root=hdfs2://cluster/runs"])
    with pytest.raises(ConfigError, match=r"pipeline.metadata: .* must be a local directory"):
        load_config(None, ["pipeline.root=gs://bucket/runs", "pipeline.metadata=gs://bucket/meta"])


def test_tensorflow_side_reads_a_ram_filesystem(baseline):
    """reader.make_dataset and load_schema through tf.io.gfile on TF's in-memory filesystem."""
    import tensorflow as tf

    target = "ram://ganpipe/processed"
    for path in [baseline["processed"] + "/schema.json"] + [
            p for split in ingest.SPLITS for p in beamio.shard_paths(os.path.join(baseline["processed"], split))]:
        relative = os.path.relpath(path, baseline["processed"])
        tf.io.gfile.makedirs(os.path.dirname(f"{target}/{relative}"))
        tf.io.gfile.copy(path, f"{target}/{relative}", overwrite=True)
    schema = reader.load_schema(target)
    assert schema == baseline["result"]["schema"]
    from_ram = reader.make_dataset(target, schema, split="eval", batch_size=1000, shuffle=False, with_labels=True,
                                   drop_remainder=False)
    from_disk = reader.make_dataset(baseline["processed"], schema, split="eval", batch_size=1000, shuffle=False,
                                    with_labels=True, drop_remainder=False)
    (x_ram, y_ram), (x_disk, y_disk) = next(iter(from_ram)), next(iter(from_disk))
    assert x_ram.shape[0] == baseline["metadata"]["counts"]["eval"]
    np.testing.assert_array_equal(x_ram.numpy(), x_disk.numpy())
    np.testing.assert_array_equal(y_ram.numpy(), y_disk.numpy())
    assert storage.read_json(f"{target}/schema.json") == schema  # the layer's TF branch


# ------------------------------------------------------------------------- CRC + TFMD
def test_a_flipped_byte_is_a_rejected_record_with_shard_and_index(baseline, tmp_path):
    raw = str(tmp_path / "raw")
    shutil.copytree(baseline["raw"], raw)
    shard = beamio.shard_paths(os.path.join(raw, "eval"))[0]
    data = bytearray(open(shard, "rb").read())
    first_length = int.from_bytes(data[:8], "little")
    second_start = 12 + first_length + 4
    data[second_start + 12 + 40] ^= 0x01  # a pixel byte inside record 1's data
    open(shard, "wb").write(bytes(data))
    result = preprocess.run_preprocess(raw, str(tmp_path / "out"), image_size=IMAGE_SIZE,
                                       max_rejected_fraction=0.01, **QUIET)
    assert result["statistics"]["records"] == {"read": 1797, "written": 1796, "rejected": 1}
    listing = storage.read_bytes(result["rejected_path"]).decode().strip()
    assert f'"path": "{shard}"' in listing and '"index": 1' in listing and "bad data CRC" in listing


def test_statistics_and_schema_protos_read_without_ganpipe(baseline):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

    processed = baseline["processed"]
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        open(os.path.join(processed, "statistics.pb"), "rb").read())
    labels = {split: collections.Counter() for split in ingest.SPLITS}
    pixels = {split: [] for split in ingest.SPLITS}
    import tensorflow as tf

    for split, counter in records(processed).items():
        for serialized, n in counter.items():
            example = tf.train.Example.FromString(serialized).features.feature
            labels[split][example["label"].int64_list.value[0]] += n
            pixels[split] += [np.frombuffer(example["image"].bytes_list.value[0], np.uint8)] * n
    assert [d.name for d in stats.datasets] == list(ingest.SPLITS)
    for dataset in stats.datasets:
        features = {f.path.step[0]: f for f in dataset.features}
        assert dataset.num_examples == sum(labels[dataset.name].values())
        buckets = features["label"].string_stats.rank_histogram.buckets
        assert {int(b.label): b.sample_count for b in buckets} == {i: labels[dataset.name][i] for i in range(10)}
        values = np.concatenate(pixels[dataset.name]).astype(np.float64)
        gray = features["image/gray"].num_stats
        assert gray.mean == pytest.approx(values.mean()) and gray.std_dev == pytest.approx(values.std())
        assert (gray.min, gray.max) == (values.min(), values.max())
        counts = [b.sample_count for b in gray.histograms[0].buckets]
        assert counts == np.histogram(values, bins=16, range=(0, 256))[0].tolist()
    schema = text_format.Parse(open(os.path.join(processed, "schema.pbtxt")).read(), schema_pb2.Schema())
    assert {f.name: f.type for f in schema.feature} == {
        "key": schema_pb2.BYTES, "label": schema_pb2.INT, "image": schema_pb2.BYTES}
    assert schema.feature[1].int_domain.max == 9


@pytest.mark.slow
def test_pipeline_run_with_a_gs_root_publishes_there(gcs_bucket, tmp_path):
    """The local runner with pipeline.root on gs://: outputs written under their execution id,
    recorded in the local store, a second run all cache hits."""
    from ganpipe.pipeline.runner import LocalRunner

    config = load_config(None, [f"pipeline.root={gcs_bucket}/runs", f"pipeline.metadata={tmp_path}/meta",
                                f"preprocess.image_size={IMAGE_SIZE}"])
    runner = LocalRunner(config.root, config.name, config.nodes, config.parameters, echo=lambda line: None,
                         metadata=config.metadata)
    first = runner.run(until="Preprocess")
    assert first.state == "COMPLETE", first.error
    for step in first.steps:
        for output, artifact in step.outputs.items():
            expected = f"{gcs_bucket}/runs/{config.name}/{step.component}/{output}/{step.execution_id}"
            assert artifact.uri == expected and storage.glob(storage.join(artifact.uri, "**"))
    schema_uri = first.steps[1].outputs["schema"].uri
    assert storage.read_json(f"{schema_uri}/schema.json")["shape"] == [IMAGE_SIZE, IMAGE_SIZE, 1]
    assert "metadata.sqlite" in os.listdir(tmp_path / "meta") and not os.path.exists("gs:")
    second = runner.run(until="Preprocess")
    assert [step.status for step in second.steps] == ["cached", "cached"]
    assert [s.outputs["examples"].fingerprint for s in second.steps] == [
        s.outputs["examples"].fingerprint for s in first.steps]


@pytest.mark.slow
def test_gc_and_verify_on_a_gs_root(gcs_bucket, tmp_path):
    """On an object store (no directories, no rename): gc deletes the superseded Preprocess outputs
    and an unrecorded execution directory object by object and keeps the rest; verify recomputes
    fingerprints there and names a changed artifact."""
    from ganpipe.pipeline import gc
    from ganpipe.pipeline.runner import LocalRunner
    from ganpipe.pipeline.verify import verify

    root, metadata = f"{gcs_bucket}/gc", str(tmp_path / "meta")

    def run(image_size: int):
        config = load_config(None, [f"pipeline.root={root}", f"pipeline.metadata={metadata}",
                                    f"preprocess.image_size={image_size}"])
        result = LocalRunner(config.root, config.name, config.nodes, config.parameters, echo=lambda line: None,
                             metadata=config.metadata).run(until="Preprocess")
        assert result.state == "COMPLETE", result.error
        return {name: a.uri for step in result.steps for name, a in step.outputs.items() if step.component == "Preprocess"}, \
            result.steps[0].outputs["examples"].uri

    old, ingested = run(IMAGE_SIZE)
    new, ingested_again = run(IMAGE_SIZE // 2)
    assert ingested_again == ingested and old["examples"] != new["examples"]
    stray = f"{root}/digits_cgan/Ingest/examples/999"
    storage.write_bytes(f"{stray}/train/data.tfrecord", b"x")
    assert verify(metadata) == (7, [])
    removed = gc.collect_garbage(metadata)
    assert sorted(g.path for g in removed) == sorted([*old.values(), stray])
    assert all(g.bytes > 0 for g in removed)
    assert not any(storage.glob(f"{uri}/**") for uri in [*old.values(), stray])
    assert all(storage.glob(f"{uri}/**") for uri in [*new.values(), ingested])
    assert verify(metadata) == (4, []) and gc.collect_garbage(metadata) == []
    schema = f"{new['schema']}/schema.json"
    storage.write_json(schema, {**storage.read_json(schema), "shape": [1, 1, 1]})
    assert [(p.path, p.problem) for p in verify(metadata)[1]] == [(new["schema"], "fingerprint mismatch")]
    assert not os.path.exists("gs:")


def test_statistics_report_what_the_original_images_were(tmp_path):
    from PIL import Image
    from tensorflow_metadata.proto.v0 import statistics_pb2

    root = tmp_path / "images"
    root.mkdir()
    originals = [("a.png", "PNG", "RGB", (40, 20)), ("b.png", "PNG", "RGB", (40, 20)), ("c.jpg", "JPEG", "L", (10, 10)),
                 ("d.gif", "GIF", "P", (16, 32)), ("e.png", "PNG", "RGBA", (24, 24))]
    for name, image_format, mode, size in originals:
        Image.new(mode, size).save(root / name, image_format)
    ingest.run_ingest(f"images:{root}", str(tmp_path / "raw"), eval_fraction=0.0, **QUIET)
    result = preprocess.run_preprocess(str(tmp_path / "raw"), str(tmp_path / "out"), image_size=16, **QUIET)
    facts = result["statistics"]["splits"]["train"]["source_images"]
    assert facts["formats"] == {"GIF": 1, "JPEG": 1, "PNG": 3}
    assert facts["modes"] == {"L": 1, "P": 1, "RGB": 2, "RGBA": 1}
    assert facts["width"] == {"min": 10, "max": 40, "mean": 26.0}
    assert facts["height"] == {"min": 10, "max": 32, "mean": 21.2}
    assert facts["upscaled"] == 1  # only the 10x10 JPEG is smaller than 16 on a side
    ratios = {(bucket["low"], bucket["high"]): bucket["count"] for bucket in facts["aspect_ratio"] if bucket["count"]}
    assert ratios == {(0.5, 0.75): 1, (0.9, 1 / 0.9): 2, (2.0, None): 2}  # buckets are [low, high)
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString((tmp_path / "out" / "statistics.pb").read_bytes())
    features = {f.path.step[0]: f for f in stats.datasets[0].features}
    assert {v.value: v.frequency for v in features["source/format"].string_stats.top_values} == facts["formats"]
    assert features["source/width"].custom_stats[0].num == 1
    assert [b.sample_count for b in features["source/aspect_ratio"].num_stats.histograms[0].buckets] == [
        0, 1, 0, 2, 0, 0, 2]
