from setuptools import find_packages, setup

setup(
    name="ganpipe",
    version="0.1.0",
    description="Train GANs as a TFX-style batch pipeline on TensorFlow/Keras and Apache Beam.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ganpipe", "ganpipe.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tfds 4.9.10 imports it on 3.11 without declaring it
        "tensorboard>=2.21",
        "apache-beam[tfrecord]>=2.60",  # the extra brings the CRC library TFRecord writing needs
        "crcmod>=1.7",  # CRC-32C of our hand-framed TFRecords (Beam has it only in extras)
        "click>=8.1",
        "pillow>=10",
        "scikit-learn>=1.4",  # ships the offline default data set (8x8 digits)
        "scipy>=1.11",  # matrix square root for Fréchet distances, KS statistics
        "pyyaml>=6",  # pipeline configs
    ],
    extras_require={
        # ganpipe compile --target kubeflow. kfp 2.17 needs protobuf>=6.31.1,<7 (TF 2.21 has 6.33) and
        # pins requests==2.33.0 and urllib3==2.8.0; pip check is clean beside TF 2.21 and Beam 2.77.
        "kubeflow": ["kfp>=2.17,<3"],
        "test": ["pytest>=8", "kfp>=2.17,<3"],  # kfp: tests/test_kubeflow.py reads compiled specs back
    },
    entry_points={"console_scripts": ["ganpipe=ganpipe.pipeline.cli:main"]},
)
