"""What a file source's listing sees, through the real CLI: the files Ingest reads are the files its
cache key fingerprints (Beam's pattern rule, links followed), a replaced file is seen whatever its
mtime, and a dangling link, a directory cycle or an unreadable entry is a rejected record."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ganpipe(*args, expect=0):
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", *args], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def run_until(step, root, source, *settings):
    return ganpipe("run", "--until", step, "--root", str(root), "--set", f"ingest.source={source}",
                   "--set", "ingest.eval_fraction=0", *(arg for s in settings for arg in ("--set", s)))


def ingest_plan(root, source) -> str:
    """The dry-run line of Ingest: cached or will run, and why."""
    out = ganpipe("run", "--dry-run", "--until", "ingest", "--root", str(root), "--set", f"ingest.source={source}",
                  "--set", "ingest.eval_fraction=0").stdout
    return next(line for line in out.splitlines() if "Ingest" in line)


def png(path, value):
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def published(root, step, output):
    base = root / "digits_cgan" / step / output
    return base / sorted(os.listdir(base), key=int)[-1]


@pytest.mark.slow
def test_linked_class_folder_is_read_and_dangling_links_and_cycles_are_rejected_records(tmp_path):
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere" / "b"
    (images / "a").mkdir(parents=True)
    elsewhere.mkdir(parents=True)
    for i in range(4):
        png(images / "a" / f"{i}.png", 30 * i)
        png(elsewhere / f"{i}.png", 30 * i + 5)
    (images / "b").symlink_to(elsewhere)  # a whole class behind a link
    (images / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (images / "a" / "loop").symlink_to(images)
    run_until("preprocess", tmp_path / "root", f"images:{images}", "preprocess.max_rejected_fraction=0.5")
    metadata = json.loads((published(tmp_path / "root", "Ingest", "examples") / "metadata.json").read_text())
    assert metadata["label_counts"] == {"a": 4, "b": 4}
    assert metadata["read"] == 10
    with open(published(tmp_path / "root", "Preprocess", "examples") / "rejected.jsonl") as f:
        rejected = sorted((entry["reason"], entry["message"]) for entry in map(json.loads, f))
    assert [reason for reason, _ in rejected] == ["unreadable", "unreadable"]
    assert "dangling link" in rejected[0][1] and "gone.png" in rejected[0][1]
    assert "cycle" in rejected[1][1] and "loop" in rejected[1][1]


@pytest.mark.slow
def test_tfrecord_glob_key_sees_hidden_files_in_subdirectories_and_the_run_reads_them(tmp_path):
    import tensorflow as tf

    def write(path, values):
        with tf.io.TFRecordWriter(str(path)) as writer:
            for value in values:
                feature = {"image": tf.train.Feature(float_list=tf.train.FloatList(value=[value, value]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    write(data / "a.tfrecord", range(20))
    source = f"tfrecord:{data}/**.tfrecord"
    run_until("ingest", tmp_path / "root", source)
    assert "cached" in ingest_plan(tmp_path / "root", source)
    write(data / "sub" / ".more.tfrecord", range(100, 130))  # in a subdirectory and hidden: Beam matches it
    assert "will run" in ingest_plan(tmp_path / "root", source)
    run_until("ingest", tmp_path / "root", source)
    metadata = json.loads((published(tmp_path / "root", "Ingest", "examples") / "metadata.json").read_text())
    assert metadata["read"] == 50


@pytest.mark.slow
def test_an_image_replaced_with_the_same_size_and_mtime_reruns_ingest(tmp_path):
    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    for i in range(3):
        png(images / f"{i}.png", 40 * i)
    png(tmp_path / "other.png", 250)
    assert os.path.getsize(tmp_path / "other.png") == os.path.getsize(images / "1.png")
    source = f"images:{tmp_path / 'images'}"
    run_until("ingest", tmp_path / "root", source)
    assert "cached" in ingest_plan(tmp_path / "root", source)
    before = os.stat(images / "1.png")
    shutil.copyfile(tmp_path / "other.png", images / "1.png")  # new content, same size
    os.utime(images / "1.png", ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r: the old mtime back
    assert "will run" in ingest_plan(tmp_path / "root", source)


FAMILY_MODULE = '''
from ganpipe.components import specs
from ganpipe.ganmodels import networks
from ganpipe.pipeline.dag import DEFAULT_NODES, Node

WIDTH = {width}


@networks.register_family("tiny")
def tiny(data_shape, latent_dim, num_classes=0):
    return networks.build_mlp(data_shape, latent_dim, hidden=(WIDTH,))


specs.register_family("tiny", ())
NODES = (*DEFAULT_NODES[:2], Node("Train", "ganpipe.components.specs:TRAIN",
                                  {{"examples": "Preprocess.examples", "schema": "Preprocess.schema"}}))
'''


@pytest.mark.slow
def test_editing_a_custom_family_module_reruns_train(tmp_path):
    module = tmp_path / "tinyfamily.py"
    module.write_text(FAMILY_MODULE.format(width=16))
    config = tmp_path / "tiny.yaml"
    config.write_text("pipeline: {dag: 'tinyfamily:NODES'}\npreprocess: {image_size: 8}\n"
                      "train: {family: tiny, steps: 2, batch_size: 16}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, str(tmp_path)]), "TF_CPP_MIN_LOG_LEVEL": "2"}

    def ganpipe_here(*args):
        result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", *args, "--root", str(tmp_path / "root"),
                                 str(config)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def train_plan():
        return next(line for line in ganpipe_here("run", "--dry-run").splitlines() if "Train" in line)

    ganpipe_here("run")
    model = published(tmp_path / "root", "Train", "model")
    info = json.loads((model / "model.json").read_text())
    assert info["sample_grid"] == "samples.png" and (model / info["sample_grid"]).is_file()  # not in .staging
    assert "cached" in train_plan()
    module.write_text(FAMILY_MODULE.format(width=64))
    plan = train_plan()
    assert "will run" in plan and "code changed" in plan
