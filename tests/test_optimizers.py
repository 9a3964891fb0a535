"""kerasnlp_plus' optimizers give the dense (exact) Adam update for embedding rows
that repeat within a batch, where Keras' own applies the slices one by one."""
import numpy as np
import pytest
import tensorflow as tf

import keras
from kerasnlp_plus import optimizers


def _one_step(optimizer_cls, gradient):
    var = keras.Variable(np.zeros((3, 2), np.float32))
    opt = optimizer_cls(0.1, epsilon=1e-3)
    opt.build([var])
    opt.apply([gradient], [var])
    return var.numpy()


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Lamb"])
def test_repeated_rows_update_like_the_dense_gradient(name):
    sparse = tf.IndexedSlices(tf.constant([[1.0, 1.0], [1.0, -3.0]]), tf.constant([0, 0]), tf.constant([3, 2]))
    dense = tf.convert_to_tensor(sparse)
    ours = _one_step(getattr(optimizers, name), sparse)
    reference = _one_step(getattr(keras.optimizers, name), dense)
    np.testing.assert_allclose(ours, reference, atol=1e-7)
    assert np.abs(ours).max() > 0


def test_keras_sparse_update_differs_which_is_why_these_exist():
    """If Keras fixes its sparse Adam update this fails, and the wrappers can go."""
    sparse = tf.IndexedSlices(tf.constant([[1.0, 1.0], [1.0, -3.0]]), tf.constant([0, 0]), tf.constant([3, 2]))
    a = _one_step(keras.optimizers.Adam, sparse)
    b = _one_step(keras.optimizers.Adam, tf.convert_to_tensor(sparse))
    assert np.abs(a - b).max() > 1e-3
