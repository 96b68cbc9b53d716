"""`keras.layers.DepthwiseConv2D` written as shifted multiply-adds on JAX.

A depthwise convolution multiplies each channel by its own small kernel: per
kernel tap, one elementwise multiply-add of a shifted (and strided) view of the
padded input. XLA:CPU runs it as a grouped convolution with one group per
channel, 25-70x slower than those multiply-adds on MobileNetV2's shapes, and
its gradient 6-40x (benchmarks/PROFILE.md section 9). TensorFlow's and
PyTorch's depthwise kernels are not affected.

On PyTorch, `ops.depthwise_conv` gets a channels-first view of the NHWC input
instead of Keras' two copies of it (to NCHW, then to PyTorch's channels-last
layout, which is the NHWC tensor's own memory), as `keras_sanet.layers.Conv2D`
does (section 11).

The class keeps Keras' name on purpose, as `keras_sanet.layers.Conv2D` does:
Keras 3 `.weights.h5` files key a functional model's layers by class name, so
a backbone built from this layer reads and writes the same files. Its config,
variables and outputs are DepthwiseConv2D's.
"""

import keras
from keras import ops

from keras_sanet.layers.conv2d import on_channels_first_view
from keras_sanet.layers.conv2d import spatial_sizes_known


@keras.saving.register_keras_serializable(package="keras_sanet")
class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D`, as multiply-adds on JAX (same config and weights).

    With `depthwise_as_multiply_adds` (on by default on JAX only), a
    channels-last kernel with `depth_multiplier=1` on an input whose height
    and width are numbers when traced is computed as one multiply-add per
    kernel tap over the padded input ("same" pads as Keras does: the odd pixel
    after), strided and dilated as asked. With `convolve_channels_first` (on
    by default on PyTorch only), `ops.depthwise_conv` runs on a channels-first
    view of the channels-last input. Everything else is Keras' own.

    Args:
        *args, **kwargs: those of `keras.layers.DepthwiseConv2D`.

    Example:
    >>> layer = DepthwiseConv2D(3, strides=2, padding="same")
    >>> layer(np.ones((1, 7, 7, 4))).shape
    (1, 4, 4, 4)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Not in the config. On where it was measured faster: JAX (PROFILE.md
        # section 9; `profile_inference.py --probes depthwise` for the A/B).
        self.depthwise_as_multiply_adds = keras.backend.backend() == "jax"
        # Not in the config. On PyTorch only (PROFILE.md section 11); TensorFlow's
        # CPU kernels have no channels-first convolution.
        self.convolve_channels_first = keras.backend.backend() == "torch"

    @property
    def runs_as_multiply_adds(self):
        """Whether `call` multiplies and adds instead of calling `ops.depthwise_conv`
        (where the input's height and width are numbers)."""
        return (
            self.depthwise_as_multiply_adds
            and self.depth_multiplier == 1
            and self.data_format == "channels_last"
        )

    @property
    def runs_channels_first(self):
        """Whether `ops.depthwise_conv` sees a channels-first view of the input
        (where the multiply-adds do not run)."""
        return self.convolve_channels_first and self.data_format == "channels_last"

    def call(self, inputs):
        if self.runs_as_multiply_adds and spatial_sizes_known(inputs):
            outputs = self._multiply_adds(inputs)
        elif self.runs_channels_first:
            outputs = on_channels_first_view(
                ops.depthwise_conv, inputs, self.kernel, strides=self.strides,
                padding=self.padding, dilation_rate=self.dilation_rate,
            )
        else:
            return super().call(inputs)
        if self.use_bias:
            outputs = ops.add(outputs, ops.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _multiply_adds(self, inputs):
        """The depthwise convolution as one multiply-add per kernel tap."""
        sizes = inputs.shape[1:3]
        kernel = ops.cast(self.kernel, self.compute_dtype)  # (kh, kw, channels, 1)
        (row_stride, column_stride), (row_rate, column_rate) = self.strides, self.dilation_rate
        output_sizes = self.compute_output_shape(inputs.shape)[1:3]
        pads = []
        for size, output_size, stride, rate, kernel_size in zip(
            sizes, output_sizes, self.strides, self.dilation_rate, self.kernel_size
        ):
            total = max((output_size - 1) * stride + (kernel_size - 1) * rate + 1 - size, 0)
            pads.append((total // 2, total - total // 2) if self.padding == "same" else (0, 0))
        padded = ops.pad(inputs, ((0, 0), pads[0], pads[1], (0, 0)))
        height, width = output_sizes
        outputs = None
        for i in range(self.kernel_size[0]):
            for j in range(self.kernel_size[1]):
                top, left = i * row_rate, j * column_rate
                view = padded[:, top: top + (height - 1) * row_stride + 1: row_stride,
                              left: left + (width - 1) * column_stride + 1: column_stride, :]
                term = view * kernel[i, j, :, 0]
                outputs = term if outputs is None else outputs + term
        return outputs
