"""The fast path for small networks: chunked steps_per_execution and the "auto" choices."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ganpipe import ganmodels
from ganpipe.components import trainer
from ganpipe.components.train_args import TrainArgs
from ganpipe.ganmodels.fast_loop import _stackable, auto_steps_per_execution
from ganpipe.ganmodels.network_walk import has_convolutions


def small_gan(**compile_args):
    keras.utils.set_random_seed(0)
    gan = ganmodels.build_gan("mlp", (3,), latent_dim=2, hidden=(8,), seed=1)
    gan.compile(ganmodels.default_optimizer(1e-2), ganmodels.default_optimizer(1e-2), **compile_args)
    return gan


def data(batches=6):
    points = np.random.default_rng(0).normal(size=(8 * batches, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices(points).batch(8, drop_remainder=True)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_several_steps_run_in_one_compiled_chunk_with_the_weights_of_single_steps(jit_compile):
    """The chunk loop really runs (Keras' own loop would give the same weights), with XLA too:
    XLA's random kernels draw other numbers than the CPU's, so XLA's weights differ from the
    plain chunk's while matching XLA's single steps."""
    weights = {}
    for spe, jit in ((1, jit_compile), (3, jit_compile), (3, not jit_compile)):
        gan = small_gan(steps_per_execution=spe, jit_compile=jit)
        gan.fit(data(), epochs=1, verbose=0)
        assert int(gan.step.numpy()) == 6
        if spe > 1:
            assert gan.chunk_function.experimental_get_tracing_count() >= 1
        weights[spe, jit] = np.concatenate([w.ravel() for w in gan.generator.get_weights()])
    np.testing.assert_allclose(weights[3, jit_compile], weights[1, jit_compile], rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights[3, jit_compile], weights[3, not jit_compile], rtol=1e-3, atol=1e-4)


def test_a_finite_dataset_ends_inside_an_execution_without_losing_steps():
    gan = small_gan(steps_per_execution=4, jit_compile=False)
    history = gan.fit(data(batches=5), epochs=1, verbose=0)
    assert int(gan.step.numpy()) == 5 and np.isfinite(history.history["d_loss"][0])


def test_auto_steps_per_execution_divides_the_epoch_and_respects_batch_callbacks():
    gan = small_gan(jit_compile=False)
    gan.fit(data().repeat(), steps_per_epoch=6, epochs=1, verbose=0)
    assert gan.steps_per_execution == 6 and int(gan.step.numpy()) == 6

    class EveryBatch(keras.callbacks.Callback):
        calls = 0

        def on_train_batch_end(self, batch, logs=None):
            EveryBatch.calls += 1

    gan.fit(data().repeat(), steps_per_epoch=4, epochs=1, verbose=0, callbacks=[EveryBatch()])
    assert gan.steps_per_execution == 1 and EveryBatch.calls == 4
    gan.fit(data().repeat(), steps_per_epoch=10, epochs=1, verbose=0, callbacks=[keras.callbacks.History()])
    assert gan.steps_per_execution == 10 and int(gan.step.numpy()) == 20


@pytest.mark.parametrize("cadences, expected", [((50, 100, 200, 3000), 50), ((7,), 7), ((0, None), 100),
                                                ((101,), 1), ((600, 400), 100), ((250, 1000), 50)])
def test_auto_steps_per_execution_is_the_largest_common_divisor_up_to_100(cadences, expected):
    assert auto_steps_per_execution(*cadences) == expected


def test_auto_xla_is_for_dense_networks_only():
    dcgan = ganmodels.build_gan("dcgan", (8, 8, 1), latent_dim=2, width=4, spectral_norm=True)
    mlp = ganmodels.build_gan("mlp", (3,), latent_dim=2, hidden=(4,))
    assert has_convolutions(dcgan.generator, dcgan.discriminator) and not has_convolutions(mlp.generator,
                                                                                         mlp.discriminator)
    dcgan.compile()
    mlp.compile()
    assert not dcgan.jit_compile and mlp.jit_compile


def test_train_aligns_executions_with_its_callbacks_and_resume_point():
    args = TrainArgs.from_params({})
    assert args.runtime.steps_per_execution is None and args.runtime.jit_compile is None
    aligned = lambda done=0, replicas=1, **given: trainer.steps_per_execution(  # noqa: E731
        TrainArgs.from_params(given), done, 3000, replicas)
    assert aligned() == 50
    assert aligned(checkpoint_every=30) == 10
    assert aligned(eval_every=20) == 10
    assert aligned(done=1010) == 10  # a resume from step 1010
    assert aligned(steps_per_execution=7) == 7
    assert aligned(replicas=2) == 1  # Keras' multi-step loop fails there


def test_alternating_epoch_lengths_reuse_their_traced_functions():
    gan = small_gan(jit_compile=False)
    gan.fit(data().repeat(), steps_per_epoch=6, epochs=1, verbose=0)
    six = gan.train_function
    gan.fit(data().repeat(), steps_per_epoch=4, epochs=1, verbose=0)
    four = gan.train_function
    gan.fit(data().repeat(), steps_per_epoch=6, epochs=1, verbose=0)
    assert gan.train_function is six and four is not six and int(gan.step.numpy()) == 16


def test_a_fixed_steps_per_execution_holds_whatever_callbacks_fit_gets():
    gan = small_gan(jit_compile=False)
    gan.set_steps_per_execution(3)
    assert gan.steps_per_execution == 3
    batch_ends = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: None)
    gan.fit(data().repeat(), steps_per_epoch=6, epochs=1, verbose=0, callbacks=[batch_ends])
    assert gan.steps_per_execution == 3 and int(gan.step.numpy()) == 6


def test_run_eagerly_keeps_keras_eager_loop_whatever_the_steps_per_execution():
    gan = small_gan(steps_per_execution=3, jit_compile=False, run_eagerly=True)
    gan.fit(data(), epochs=1, verbose=0)
    assert int(gan.step.numpy()) == 6 and not hasattr(gan, "chunk_function")


def test_only_plain_tf_data_iterators_of_one_static_shape_are_stacked():
    assert _stackable(iter(data()))
    assert not _stackable(iter(tf.data.Dataset.range(10).batch(3)))  # a last partial batch
    assert not _stackable(iter([np.zeros((8, 3), "float32")]))  # not a tf.data iterator
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert not _stackable(iter(strategy.experimental_distribute_dataset(data())))


def test_a_lambda_callbacks_batch_hook_keeps_one_step_per_execution_and_epoch_hooks_do_not():
    gan = small_gan(jit_compile=False)
    batch_ends = []
    gan.fit(data().repeat(), steps_per_epoch=4, epochs=1, verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_ends.append(batch))])
    assert gan.steps_per_execution == 1 and batch_ends == [0, 1, 2, 3]
    gan.fit(data().repeat(), steps_per_epoch=6, epochs=1, verbose=0,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: None)])
    assert gan.steps_per_execution == 6


def test_forcing_a_new_train_function_rebuilds_keras_own_too():
    """After switching to eager execution, a forced rebuild gives Keras' eager function, not the
    chunked one built before."""
    gan = small_gan(steps_per_execution=3, jit_compile=False)
    gan.fit(data(batches=3), epochs=1, verbose=0)
    chunked = gan.train_function
    gan.run_eagerly = True
    assert gan.make_train_function(force=True) is not chunked
