"""ganpipe: train GANs as a TFX-style batch pipeline on TensorFlow/Keras and Apache Beam.

Three floors, arrows point down only:
  ganpipe.pipeline    config -> DAG of components -> LocalRunner + metadata store -> CLI
  ganpipe.components  one module per step: spec (inputs, outputs, parameters) + executor
  ganpipe.ganmodels   Keras networks, losses, the GAN model and its train_step, metrics math
"""

__version__ = "0.1.0"
