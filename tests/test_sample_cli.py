"""``ganpipe sample`` through the real CLI: a grid is bounded before anything loads, and TensorFlow's
C++ log lines stay hidden as they do in ``run``."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from ganpipe.pipeline import sampling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A Model artifact in the form Train writes: an 8 x 8 grey generator and model.json."""
    directory = tmp_path_factory.mktemp("model")
    z = keras.Input((4,), name="latent")
    images = keras.layers.Reshape((8, 8, 1))(keras.layers.Dense(64, activation="tanh")(z))
    keras.Model(z, images).save(directory / "generator.keras")
    (directory / "model.json").write_text(json.dumps({"num_classes": 0}))
    return directory


def sample(model_dir, *args):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "sample", str(model_dir), *args],
                          env={**env, "PYTHONPATH": REPO}, capture_output=True, text=True, timeout=300)


def test_a_grid_too_large_to_hold_is_refused_before_the_model_loads(model_dir, tmp_path):
    result = sample(model_dir, "--format", "grid", "-n", "100000000", "-o", str(tmp_path / "grid.png"))
    assert result.returncode == 2
    assert f"a grid holds at most {sampling.MAX_GRID_SAMPLES:,} samples" in result.stderr
    assert not (tmp_path / "grid.png").exists()


def test_sample_writes_a_grid_at_the_bound_without_tensorflow_log_lines(model_dir, tmp_path):
    out = tmp_path / "grid.png"
    result = sample(model_dir, "--format", "grid", "-n", "9", "-o", str(out), "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (3 * 8 * 4, 3 * 8 * 4)  # 3 x 3 tiles, 8 px scaled up to 32
    noise = [line for line in result.stderr.splitlines() if line.strip()]
    assert noise == [], noise  # TensorFlow's C++ logging ("oneDNN custom operations", "cpu_feature_guard")


def test_the_grid_bound_is_inclusive(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sampling, "MAX_GRID_SAMPLES", 4)
    sampling.sample(str(model_dir), 4, str(tmp_path / "four.png"), "grid", seed=0)
    assert Image.open(tmp_path / "four.png").size == (64, 64)
    with pytest.raises(sampling.SampleError, match="at most 4 samples"):
        sampling.sample(str(model_dir), 5, str(tmp_path / "five.png"), "grid", seed=0)
