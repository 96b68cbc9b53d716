"""`keras.layers.Conv2D` whose 1x1 convolutions run as one matrix multiply.

A 1x1 convolution is a matmul over the channel axis. Written as one, its
forward and backward passes are plain GEMMs on every backend, where the
convolution kernels are not (benchmarks/PROFILE.md section 7, on the 2-core
CPU: XLA:CPU's gradient of a 1x1 convolution took 3-9x its forward pass, the
matmul's ~2.3x; PyTorch's 1x1 convolution ran behind Keras' NHWC->NCHW
transposes, the matmul on the NHWC tensor as it is).

The class keeps Keras' name on purpose: Keras 3 `.weights.h5` files key a
functional model's layers by class name (`conv2d_7`), so a backbone built from
this layer reads and writes the same files as one built from
`keras.layers.Conv2D`. Its config, variables and outputs are Conv2D's.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sanet")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, with a matmul for 1x1 kernels (same config and weights).

    A 1x1, single-group, channels-last convolution takes every `strides`-th
    pixel (what a 1x1 kernel with "valid" or "same" padding sees) and
    multiplies it by the `(1, 1, in, out)` kernel seen as an `(in, out)`
    matrix; a strided one does so where its input's height and width are known
    numbers when it is traced. Every other convolution is Keras' own.

    Args:
        *args, **kwargs: those of `keras.layers.Conv2D`.

    Example:
    >>> layer = Conv2D(8, 1, strides=2)
    >>> layer(np.ones((1, 5, 5, 4))).shape
    (1, 3, 3, 8)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Not in the config: set False to run Keras' convolution instead (the
        # benchmarks' A/B, `profile_inference.py --probes pointwise`).
        self.pointwise_as_matmul = True

    @property
    def runs_as_matmul(self):
        """Whether `call` multiplies matrices instead of calling `ops.conv`."""
        return (
            self.pointwise_as_matmul
            and tuple(self.kernel_size) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        )

    def convolution_op(self, inputs, kernel):
        if not self.runs_as_matmul:
            return super().convolution_op(inputs, kernel)
        row_stride, column_stride = self.strides
        if (row_stride, column_stride) != (1, 1):
            if not all(isinstance(size, int) for size in inputs.shape[1:3]):
                # Unknown or symbolic sizes (a TensorFlow graph with None, a JAX
                # export's shape polymorphism): the slice's ceil(n / s) would not
                # be provably the convolution's floor((n - 1) / s) + 1, which a
                # residual Add beside it needs.
                return super().convolution_op(inputs, kernel)
            # Output pixel i sees input pixel i * stride under either padding:
            # a 1x1 kernel's "same" padding adds nothing before the first pixel.
            inputs = inputs[:, ::row_stride, ::column_stride, :]
        return ops.matmul(inputs, ops.reshape(kernel, kernel.shape[2:]))
