"""Infrastructure every floor above uses: artifact storage at URIs (``storage``, TensorFlow's ``ram://``
bridge), content fingerprints, Beam I/O and the dependency-free ``tf.Example`` codec, TFMD protos,
fault-injection points and the one error type a step raises for the user. Imports nothing else of
``ganpipe``, so ``components`` and ``pipeline`` both build on it."""
