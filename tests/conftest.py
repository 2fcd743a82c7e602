"""Shared test set-up: one pytest process, TensorFlow imported once, quiet logs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts and ends in float32, whatever a mixed-precision test set."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
