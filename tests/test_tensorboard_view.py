"""The run's TensorBoard as a user opens it: a real TensorBoard server on 127.0.0.1 over the
pipeline's tensorboard/ directory, read through its HTTP data API. A small real pipeline: Fit trains
a tiny GAN with the Train monitor, Judge writes an Evaluation report; two runs, two trials."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from click.testing import CliRunner

from ganpipe.pipeline.cli import main

pytestmark = pytest.mark.slow  # two pipeline runs and a TensorBoard server: ~1 minute

MODULE = "ganpipe_tb_dag"
SOURCE = '''
import math

from ganpipe.components.base import Component, Parameter
from ganpipe.pipeline.dag import Node


def fit(inputs, outputs, params, ctx):
    import keras
    import numpy as np
    import tensorflow as tf
    from ganpipe import ganmodels
    from ganpipe.components import monitoring

    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("mlp", (4,), latent_dim=2, hidden=(params["width"],))
    gan = ganmodels.GAN(generator, discriminator, 2)
    gan.compile(d_optimizer=ganmodels.default_optimizer(params["lr"], 0.5, 0.999),
                g_optimizer=ganmodels.default_optimizer(params["lr"], 0.5, 0.999))
    real = tf.constant(np.random.default_rng(0).normal(size=(8, 4)).astype("float32"))
    writer = tf.summary.create_file_writer(outputs["model"].path("logs", "train"))
    monitor = monitoring.TensorBoardMonitor(writer, total_steps=6, log_every=2, sample_every=100, images_per_step=8,
                                            probe=monitoring.NoiseProbe(gan, real))
    gan.fit(tf.data.Dataset.from_tensor_slices(real).repeat().batch(8), epochs=1, steps_per_epoch=6,
            callbacks=[monitor], verbose=0)
    writer.close()
    outputs["model"].write_json("model.json", {"lr": params["lr"]})
    outputs["model"].properties.update(family="mlp", steps=6)


def judge(inputs, outputs, params, ctx):
    fcd = 1000.0 * inputs["model"].read_json("model.json")["lr"]
    report = {"main_metric": "fcd", "metrics": {
        name: {"value": value, "baseline": 1.0, "better": "lower"}
        for name, value in {"fcd": fcd, "kid": 0.5, "precision": 0.75, "recall": 0.25, "coverage": 0.5}.items()}}
    outputs["evaluation"].write_json("metrics.json", report)
    outputs["blessing"].properties["blessed"] = True


NODES = [
    Node.of(Component("Fit", {}, {"model": "Model"}, (Parameter("lr", float, 1e-3), Parameter("width", int, 8),
                                                     Parameter("network", dict, {"depth": 2})), fit,
                      tensorboard_logs={"train": "model/logs/train"})),
    Node.of(Component("Judge", {"model": "Model"}, {"evaluation": "Evaluation", "blessing": "Blessing"}, (), judge),
            {"model": "Fit.model"}),
]
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """Two pipeline runs (lr 1e-3, then 2e-3 with width 16), then TensorBoard over their views."""
    directory = tmp_path_factory.mktemp("tb")
    (directory / f"{MODULE}.py").write_text(SOURCE)
    sys.path.insert(0, str(directory))
    root = str(directory / "root")
    config = directory / "tb.yaml"
    config.write_text(f"pipeline: {{name: tb, dag: '{MODULE}:NODES'}}\n")
    outputs = []
    for overrides in ([], ["--set", "fit.lr=2e-3", "--set", "fit.width=16", "--set", "fit.network.depth=3"]):
        result = CliRunner().invoke(main, ["run", str(config), "--root", root, *overrides])
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    sys.path.remove(str(directory))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", os.path.join(root, "tb", "tensorboard"),
                               "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            runs = json.load(urllib.request.urlopen(f"{url}/data/runs", timeout=5))
            if "run-2/hparams" in runs and "run-1/train" in runs:
                break
        except OSError:
            pass
        assert server.poll() is None, server.stderr.read()
        assert time.time() < deadline, "TensorBoard did not load the runs"
        time.sleep(0.5)
    yield url, root, outputs
    server.terminate()
    server.wait(timeout=30)


def get(url, path, **query):
    return json.load(urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}", timeout=30))


def post(url, path, body):
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=30))


def test_one_hparams_trial_per_run_with_the_train_parameters_and_eval_metrics(board):
    url, _, _ = board
    experiment = post(url, "/data/plugin/hparams/experiment", {"experimentName": "", "includeMetrics": True})
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"lr", "width", "network.depth", "family", "steps"} <= hparams
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert metrics == {f"metrics/{name}" for name in ("fcd", "kid", "precision", "recall", "coverage")}  # no curves
    groups = post(url, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "startIndex": 0,
        "sliceSize": 10, "includeMetrics": True,
        "colParams": [{"hparam": "lr"}, {"hparam": "network.depth"}, {"metric": {"tag": "metrics/fcd", "group": ""}}]})
    sessions = {group["sessions"][0]["name"]: group for group in groups["sessionGroups"]}
    assert sorted(sessions) == ["run-1/hparams", "run-2/hparams"]  # one trial per pipeline run
    first, second = sessions["run-1/hparams"], sessions["run-2/hparams"]
    assert (first["hparams"]["lr"], first["hparams"]["network.depth"]) == (0.001, 2)
    assert (second["hparams"]["lr"], second["hparams"]["width"], second["hparams"]["network.depth"]) == (0.002, 16, 3)
    fcd = {name: [m["value"] for m in group["metricValues"] if m["name"]["tag"] == "metrics/fcd"] for name, group in sessions.items()}
    assert fcd == {"run-1/hparams": [pytest.approx(1.0)], "run-2/hparams": [pytest.approx(2.0)]}  # 1000 lr


def test_gan_layout_and_the_curves_it_names(board):
    url, _, _ = board
    layout = get(url, "/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"] for chart in category["chart"]}
    real_and_fake = charts["D(x) and D(G(z)): mean D output on real and generated samples"]
    accuracy = charts["D accuracy (equilibrium 50%)"]
    value = charts["V(D, G) (equilibrium -log 4)"]
    tags = get(url, "/data/plugin/scalars/tags")["run-1/train"]
    for patterns, expected in ((real_and_fake, {"gan/d_real", "gan/d_fake"}),
                               (charts["losses of D and G"], {"gan/d_loss", "gan/g_loss"}),
                               (accuracy, {"gan/d_accuracy", "reference/d_accuracy_equilibrium"}),
                               (value, {"gan/value", "reference/value_equilibrium"})):
        assert {tag for tag in tags for p in patterns if re.search(p, tag)} == expected
    half = get(url, "/data/plugin/scalars/scalars", run="run-1/train", tag="reference/d_accuracy_equilibrium")
    assert [point[1:] for point in half] == [[2, 0.5], [4, 0.5], [6, 0.5]]
    log4 = get(url, "/data/plugin/scalars/scalars", run="run-1/train", tag="reference/value_equilibrium")
    assert log4[0][2] == pytest.approx(-1.3862944)
    # Training curves open the Time Series page: its groups (the part before '/') sort by name.
    every_tag = {tag for run_tags in get(url, "/data/plugin/scalars/tags").values() for tag in run_tags}
    assert "metrics/fcd" in every_tag and min(tag.split("/")[0] for tag in every_tag) == "gan"


def test_views_link_the_published_logs_and_print_tensorboard_at_the_start(board):
    _, root, outputs = board
    view = os.path.join(root, "tb", "tensorboard", "run-2")
    assert outputs[1].splitlines()[1] == f"TensorBoard (live): tensorboard --logdir {view}"
    assert os.readlink(os.path.join(view, "train")) == os.path.join(root, "tb", "Fit", "model", "3", "logs", "train")
    assert sorted(os.listdir(view)) == ["hparams", "train"]
