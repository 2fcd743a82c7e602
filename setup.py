from setuptools import find_packages, setup

setup(
    name="ganpipe",
    version="0.1.0",
    description="Train GANs as a TFX-style batch pipeline on TensorFlow/Keras and Apache Beam.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ganpipe", "ganpipe.*"]),
    package_data={"ganpipe": ["configs/*.yaml"]},  # the built-in run and the ready-made configs
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tfds 4.9.10 imports it on 3.11 without declaring it
        "tensorboard>=2.21",
        "apache-beam[tfrecord]>=2.60",  # the extra brings the CRC library TFRecord writing needs
        "google-crc32c>=1.5",  # hardware CRC-32C: every TFRecord record's CRC is checked on read
        "tensorflow-metadata>=1.14",  # schema.pbtxt / statistics.pb (TFMD protos; tfds brings it too)
        "protobuf>=6.31",  # imported directly: tf.train.Example for TF-free Beam workers (TF brings it too)
        "click>=8.1",
        "pillow>=10",
        "scikit-learn>=1.4",  # ships the offline default data set (8x8 digits)
        "scipy>=1.11",  # matrix square root for Fréchet distances, KS statistics
        "pyyaml>=6",  # pipeline configs
        "rich>=13",  # live progress bars on a terminal (Keras brings it; ganpipe imports it itself)
        # privacy accountants (RDP, PLD) for train.privacy; pure Python, pins attrs<24 (pip check clean)
        "dp-accounting>=0.6",
    ],
    extras_require={
        # gs:// pipeline roots through Beam's GCS filesystem
        "gcp": ["apache-beam[gcp]>=2.60"],
        # ganpipe compile --target kubeflow. kfp 2.17 needs protobuf>=6.31.1,<7 (TF 2.21 has 6.33) and
        # pins requests==2.33.0 and urllib3==2.8.0; pip check is clean beside TF 2.21 and Beam 2.77.
        "kubeflow": ["kfp>=2.17,<3"],
        # the runner/filesystem tests: a local GCS emulator for the gs:// root;
        # kfp: tests/test_kubeflow.py reads compiled specs back; coverage: tools/mutate.py runs each
        # mutant only against the tests that execute its line (per-test coverage contexts)
        "test": ["pytest>=8", "apache-beam[gcp]>=2.60", "gcp-storage-emulator>=2024.8", "kfp>=2.17,<3",
                 "coverage>=7.4"],
    },
    entry_points={"console_scripts": ["ganpipe=ganpipe.pipeline.cli:main"]},
)
