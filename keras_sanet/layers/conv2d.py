"""`keras.layers.Conv2D` whose 1x1 convolutions run as one matrix multiply.

A 1x1 convolution is a matmul over the channel axis. Written as one, its
forward and backward passes are plain GEMMs on every backend, where the
convolution kernels are not (benchmarks/PROFILE.md section 7, on the 2-core
CPU: XLA:CPU's gradient of a 1x1 convolution took 3-9x its forward pass, the
matmul's ~2.3x; PyTorch's 1x1 convolution ran behind Keras' NHWC->NCHW
transposes, the matmul on the NHWC tensor as it is).

On JAX, a stride-1 3x3 convolution also takes its kernel gradient as matmuls,
one per kernel tap: XLA:CPU's own took 3-4x the forward pass (section 8).

On PyTorch, every other convolution is handed to `ops.conv` as a channels-first
view of the NHWC tensor. Keras' channels-last path copies the input to NCHW and
then to PyTorch's channels-last layout, which is the NHWC tensor's own memory;
the view costs nothing and oneDNN reads it as it is (section 11).

On a machine without GPUs or TPUs, a float32 stride-1 "same" 3x3 convolution
runs as Winograd's F(4x4, 3x3) (`keras_sanet.layers.winograd`), in inference
and training: 4x fewer multiply-adds, as 36 matmuls (sections 12 and 14).

The class keeps Keras' name on purpose: Keras 3 `.weights.h5` files key a
functional model's layers by class name (`conv2d_7`), so a backbone built from
this layer reads and writes the same files as one built from
`keras.layers.Conv2D`. Its config, variables and outputs are Conv2D's.
"""

import keras
from keras import ops

from keras_sanet import devices
from keras_sanet.layers.winograd import ALGORITHMS
from keras_sanet.layers.winograd import winograd_conv3x3


# Winograd from these sizes up (`Conv2D.runs_winograd`); below them the
# transforms' many small ops cost more than the multiplies saved (PROFILE.md
# section 12, with F(2x2, 3x3)). Pixels: SANet-MobileNetV2's heads at 22x22 ran
# 0.90x on TensorFlow, 32x32 maps of 2048 channels 1.45x. Channels: alone,
# SANet-R50's convolutions with 64-128 channels ran 0.42-0.99x on TensorFlow and
# PyTorch, those of 256+ faster; in the whole model a floor of 256 instead of 64
# kept TensorFlow's speed and cut 0.57 GB of its training memory, sped up
# PyTorch's training step 1.04x, and moved JAX 2-4 % either way. With F(4x4, 3x3),
# 128 instead of 256 moved the model 0.96-1.02x (section 14).
WINOGRAD_MIN_PIXELS = 32 * 32
WINOGRAD_MIN_CHANNELS = 256
# F(4x4, 3x3) over F(2x2, 3x3), SANet-R50 OS8 at 512x512 (PROFILE.md section 14):
# inference 1.05-1.09x and training step 1.05-1.12x faster on all three backends,
# at ~10x F(2x2, 3x3)'s float32 rounding (~2e-5 of the largest output).
WINOGRAD_OUTPUT_SIZE = 4


def spatial_sizes_known(inputs):
    """Whether an NHWC tensor's height and width are Python ints where it is
    traced (not TensorFlow's None or a JAX export's symbols)."""
    return all(isinstance(size, int) for size in inputs.shape[1:3])


def on_channels_first_view(convolve, inputs, kernel, **kwargs):
    """`convolve(x, kernel, data_format="channels_first", **kwargs)` on a
    channels-first view of the NHWC `inputs`, its output transposed back to NHWC.

    On PyTorch both transposes are views of the same memory (channels-last
    strides, which oneDNN reads as they are), where Keras' channels-last path
    copies the input twice (benchmarks/PROFILE.md section 11).
    """
    outputs = convolve(ops.transpose(inputs, (0, 3, 1, 2)), kernel,
                       data_format="channels_first", **kwargs)
    return ops.transpose(outputs, (0, 2, 3, 1))


@keras.saving.register_keras_serializable(package="keras_sanet")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D`, with a matmul for 1x1 kernels (same config and weights).

    A 1x1, single-group, channels-last convolution takes every `strides`-th
    pixel (what a 1x1 kernel with "valid" or "same" padding sees) and
    multiplies it by the `(1, 1, in, out)` kernel seen as an `(in, out)`
    matrix; a strided one does so where its input's height and width are known
    numbers when it is traced. Every other convolution is Keras' own.

    On JAX, a stride-1 "same" convolution with a larger odd kernel (3x3)
    computes its kernel gradient as one matmul per kernel tap instead of XLA's
    convolution (`filter_gradient_as_matmul`, on by default on JAX only). On
    PyTorch, the other convolutions run on a channels-first view of the input
    (`convolve_channels_first`, on by default on PyTorch only). With `winograd`
    (on by default where no GPU or TPU is visible), float32 stride-1 "same" 3x3
    convolutions of at least `winograd_min_pixels` (32x32) pixels and
    `winograd_min_channels` (256) channels in and out run as Winograd F(4x4,
    3x3) (`keras_sanet.layers.winograd`; `winograd_output_size = 2` for
    F(2x2, 3x3)), their tile transforms one matmul each
    (`winograd_transforms_as_matmuls = False`: sums slice by slice).

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
        # Not in the config either. On by default where it was measured faster,
        # SANet-R50's training step with `--probes filter_gradient` (PROFILE.md
        # section 8): 1.23x on JAX (XLA:CPU's kernel gradient of a 3x3
        # convolution is 3-4x its forward pass); 0.98x on TensorFlow and 0.87x on
        # PyTorch, whose own kernel gradients are matmul-speed already.
        self.filter_gradient_as_matmul = keras.backend.backend() == "jax"
        # Not in the config. On where it was measured faster: PyTorch (PROFILE.md
        # section 11). TensorFlow's CPU kernels have no channels-first convolution.
        self.convolve_channels_first = keras.backend.backend() == "torch"
        # Not in the config. On where it was measured faster, CPUs (PROFILE.md
        # section 12: SANet-R50's inference and training step on all three
        # backends). Not measured on GPUs, where cuDNN picks its own algorithms,
        # Winograd among them.
        self.winograd = devices.accelerator_count() == 0
        # Not in the config; why these floors: at their constants.
        self.winograd_min_pixels = WINOGRAD_MIN_PIXELS
        self.winograd_min_channels = WINOGRAD_MIN_CHANNELS
        # Not in the config: Winograd's output tile, 2 for F(2x2, 3x3) or 4 for
        # F(4x4, 3x3) (`winograd_conv3x3`'s `output_size`).
        self.winograd_output_size = WINOGRAD_OUTPUT_SIZE
        # Not in the config: Winograd's tile transforms as one matmul each
        # (`winograd_conv3x3`'s `transforms_as_matmuls`). SANet-R50 OS8 at
        # 512x512 with F(4x4, 3x3) (PROFILE.md section 16): training step 1.11x
        # on JAX, 1.02x on TensorFlow, 1.01x on PyTorch; inference 1.02-1.05x.
        self.winograd_transforms_as_matmuls = True

    @property
    def winograd_output_size(self):
        """Winograd's output tile: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3)."""
        return self._winograd_output_size

    @winograd_output_size.setter
    def winograd_output_size(self, size):
        # Checked here, where it is set, rather than at the next call.
        if size not in ALGORITHMS:
            raise ValueError(
                f"{type(self).__name__} {self.name!r}: winograd_output_size must be one of "
                f"{sorted(ALGORITHMS)} (2 for F(2x2, 3x3), 4 for F(4x4, 3x3)); got "
                f"{size!r}. Set `winograd = False` for the backend's own convolution.")
        self._winograd_output_size = size

    @property
    def winograd_shape(self):
        """Whether this convolution's shape allows Winograd: a
        stride-1, "same"-padded, single-group, channels-last 3x3 (any dilation)."""
        return (
            tuple(self.kernel_size) == (3, 3)
            and tuple(self.strides) == (1, 1)
            and self.padding == "same"
            and self.groups == 1
            and self.data_format == "channels_last"
        )

    @property
    def winograd_applies(self):
        """`winograd_shape`, computing in float32 (bfloat16's rounding of the
        transforms was not measured)."""
        return self.winograd_shape and self.compute_dtype == "float32"

    def winograd_takes(self, inputs):
        """Whether Winograd would run on `inputs` (switched on, in
        float32): a `winograd_shape` kernel on inputs of known height and width,
        at least `winograd_min_pixels` of them, with at least
        `winograd_min_channels` channels in and out."""
        if not (self.winograd_shape and spatial_sizes_known(inputs)):
            return False
        height, width, channels = inputs.shape[1:]
        return (height * width >= self.winograd_min_pixels
                and min(channels, self.filters) >= self.winograd_min_channels)

    def runs_winograd(self, inputs):
        """Whether the convolution of `inputs` is Winograd's."""
        return self.winograd and self.winograd_applies and self.winograd_takes(inputs)

    @property
    def runs_as_matmul(self):
        """Whether `call` multiplies matrices instead of calling `ops.conv`."""
        return (
            self.pointwise_as_matmul
            and tuple(self.kernel_size) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        )

    @property
    def filter_gradient_runs_as_matmul(self):
        """Whether the kernel's gradient is a sum of matmuls instead of the backend's.

        For a stride-1, "same"-padded, odd-sized kernel larger than 1x1.
        """
        return (
            self.filter_gradient_as_matmul
            and tuple(self.strides) == (1, 1)
            and self.padding == "same"
            and all(size % 2 == 1 for size in self.kernel_size)
            and tuple(self.kernel_size) != (1, 1)  # those are matmuls already
            and self.groups == 1
            and self.data_format == "channels_last"
        )

    @property
    def runs_channels_first(self):
        """Whether a convolution that is not a matmul sees its NHWC input as a
        channels-first view (same memory) instead of Keras' transposed copy."""
        return (
            self.convolve_channels_first
            and not self.runs_as_matmul
            and self.data_format == "channels_last"
        )

    def convolution_op(self, inputs, kernel):
        if self.runs_winograd(inputs):
            return winograd_conv3x3(inputs, kernel, self.dilation_rate,
                                    self.winograd_output_size,
                                    self.winograd_transforms_as_matmuls)
        if self.filter_gradient_runs_as_matmul and spatial_sizes_known(inputs):
            return self._convolve_with_matmul_filter_gradient(inputs, kernel)
        if self.runs_channels_first:
            return on_channels_first_view(
                ops.conv, inputs, kernel, strides=self.strides, padding=self.padding,
                dilation_rate=self.dilation_rate,
            )
        if not self.runs_as_matmul:
            return super().convolution_op(inputs, kernel)
        row_stride, column_stride = self.strides
        if (row_stride, column_stride) != (1, 1):
            if not spatial_sizes_known(inputs):
                # Unknown or symbolic sizes (a TensorFlow graph with None, a JAX
                # export's shape polymorphism): the slice's ceil(n / s) would not
                # be provably the convolution's floor((n - 1) / s) + 1, which a
                # residual Add beside it needs.
                return super().convolution_op(inputs, kernel)
            # Output pixel i sees input pixel i * stride under either padding:
            # a 1x1 kernel's "same" padding adds nothing before the first pixel.
            inputs = inputs[:, ::row_stride, ::column_stride, :]
        return ops.matmul(inputs, ops.reshape(kernel, kernel.shape[2:]))

    def _convolve_with_matmul_filter_gradient(self, inputs, kernel):
        """Keras' convolution whose gradients are written out (stride 1, "same").

        The kernel's gradient is one matmul per kernel tap: the padded input
        shifted by the tap, against the output's gradient, contracted over
        batch and pixels. XLA:CPU computes it as another convolution instead,
        at 3-4x the forward pass's time (benchmarks/PROFILE.md section 8). The
        input's gradient is the forward convolution of the output's gradient
        with the kernel flipped and its channels swapped, what the backends
        compute anyway.
        """
        rates = tuple(self.dilation_rate)
        height, width = inputs.shape[1:3]
        pads = [rate * (size // 2) for rate, size in zip(rates, self.kernel_size)]

        def convolve(x, w):
            return ops.conv(x, w, strides=1, padding="same", dilation_rate=rates,
                            data_format="channels_last")

        @ops.custom_gradient
        def convolution(x, w):
            def gradients(*args, upstream=None):
                if upstream is None:  # TensorFlow and JAX pass it positionally
                    (upstream,) = args
                flipped = ops.transpose(ops.flip(ops.flip(w, axis=0), axis=1), (0, 1, 3, 2))
                padded = ops.pad(x, ((0, 0), (pads[0], pads[0]), (pads[1], pads[1]), (0, 0)))
                taps = [
                    ops.tensordot(
                        padded[:, i * rates[0]: i * rates[0] + height,
                               j * rates[1]: j * rates[1] + width, :],
                        upstream, axes=([0, 1, 2], [0, 1, 2]),
                    )
                    for i in range(self.kernel_size[0])
                    for j in range(self.kernel_size[1])
                ]
                kernel_gradient = ops.reshape(ops.stack(taps), ops.shape(w))
                return convolve(upstream, flipped), kernel_gradient

            return convolve(x, w), gradients

        # A tensor, not the variable: TensorFlow's custom_gradient would want a
        # `variables` argument for a variable read inside, and PyTorch's autograd
        # Function tracks tensors only. (Under an autocast scope the kernel is in
        # the compute dtype already; the cast then changes nothing.)
        return convolution(inputs, ops.cast(kernel, self.compute_dtype))
