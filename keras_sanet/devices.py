"""The accelerators (GPUs, TPUs) the Keras backend sees."""

import functools

import keras


@functools.cache
def accelerator_count(backend=None):
    """How many GPUs or TPUs `backend` (default: Keras' backend) sees; 0 on a CPU-only machine.

    Args:
        backend: `"tensorflow"`, `"jax"` or `"torch"`; None for `keras.backend.backend()`.

    Example:
    >>> accelerator_count() >= 0
    True
    """
    backend = backend or keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_logical_devices("GPU")) + len(
            tf.config.list_logical_devices("TPU")
        )
    if backend == "jax":
        import jax

        return len([d for d in jax.local_devices() if d.platform != "cpu"])
    if backend == "torch":
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return 0
