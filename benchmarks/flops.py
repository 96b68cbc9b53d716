"""FLOPs of one forward pass of a Keras model, counted from its layers.

Convention: a multiply-add is 2 FLOPs, and only the multiply-adds of the
layers that carry a kernel are counted: `Conv1D/2D/3D` (with
`groups`), `Conv*Transpose`, `DepthwiseConv*`, `SeparableConv*` and `Dense`.
Biases, batch normalisation, activations, pooling, resizing and element-wise
ops are left out (a small share of the arithmetic, and BN folds into the
convolutions at deployment), as are matmuls or convolutions called as
`keras.ops` directly in a layer's `call` (neither SANet nor keras-hub's
DeepLabV3 has any: all their products are in the layers above).

Shapes come from a symbolic trace of the model (Keras' `compute_output_spec`:
a TensorFlow graph, `jax.eval_shape`, PyTorch meta tensors) with every
counted layer's `call` wrapped to record its input and output shapes. Layers called twice are counted twice; nested models and
layers held in lists are found through Keras' layer tracking.

    >>> flops = count_flops(model, (1, 512, 512, 3))   # FLOPs of one 512x512 image

These are the direct convolutions' FLOPs, whichever algorithm runs them.
keras_sanet's Conv2D computes float32 stride-1 "same" 3x3 convolutions as
Winograd F(4x4, 3x3) on CPUs, with 36 multiplies per 4x4 outputs where the
direct convolution has 144 (F(2x2, 3x3), a layer's `winograd_output_size = 2`:
16 per 2x2): `winograd_flops` counts the calls it takes as direct convolutions,
`winograd_executed_flops` the multiply-adds each of them runs at its own layer's
tile size.
"""

import contextlib
import math

import keras
from keras.src.backend import compute_output_spec
from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv


def _shape(tensor):
    return tuple(int(d) for d in tensor.shape)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _split_channels(layer, shape):
    """`(spatial elements times batch, channels)` of an activation shape."""
    if _channels_last(layer):
        return math.prod(shape[:-1]), shape[-1]
    return shape[0] * math.prod(shape[2:]), shape[1]


def _conv_flops(layer, in_shape, out_shape):
    out_positions, out_channels = _split_channels(layer, out_shape)
    _, in_channels = _split_channels(layer, in_shape)
    taps = math.prod(layer.kernel_size) * in_channels // layer.groups
    return 2 * out_positions * out_channels * taps


def _conv_transpose_flops(layer, in_shape, out_shape):
    # Every input pixel scatters a kernel-sized patch into every output channel.
    in_positions, in_channels = _split_channels(layer, in_shape)
    _, out_channels = _split_channels(layer, out_shape)
    return 2 * in_positions * in_channels * out_channels * math.prod(layer.kernel_size)


def _depthwise_flops(layer, in_shape, out_shape):
    out_positions, out_channels = _split_channels(layer, out_shape)
    return 2 * out_positions * out_channels * math.prod(layer.kernel_size)


def _separable_flops(layer, in_shape, out_shape):
    out_positions, out_channels = _split_channels(layer, out_shape)
    _, in_channels = _split_channels(layer, in_shape)
    depth_channels = in_channels * layer.depth_multiplier
    depthwise = out_positions * depth_channels * math.prod(layer.kernel_size)
    pointwise = out_positions * depth_channels * out_channels
    return 2 * (depthwise + pointwise)


def _dense_flops(layer, in_shape, out_shape):
    return 2 * math.prod(out_shape[:-1]) * in_shape[-1] * out_shape[-1]


# The public Conv*/DepthwiseConv*/SeparableConv*/Conv*Transpose classes of every
# rank derive from these four (disjoint) bases.
_FORMULAS = (
    (BaseConv, _conv_flops),
    (BaseConvTranspose, _conv_transpose_flops),
    (BaseDepthwiseConv, _depthwise_flops),
    (BaseSeparableConv, _separable_flops),
    (keras.layers.Dense, _dense_flops),
)


def _formula(layer):
    for layer_class, formula in _FORMULAS:
        if isinstance(layer, layer_class):
            return formula
    return None


@contextlib.contextmanager
def recording_calls(layers, on_call):
    """Wraps each layer's `call` (an instance attribute shadowing the method) so that
    every call also runs `on_call(layer, inputs, args, kwargs, outputs)`."""

    def wrap(layer, call):
        def recording_call(inputs, *args, **kwargs):
            outputs = call(inputs, *args, **kwargs)
            on_call(layer, inputs, args, kwargs, outputs)
            return outputs

        return recording_call

    for layer in layers:
        # object.__setattr__: skip Keras' (and torch.nn.Module's) attribute tracking.
        object.__setattr__(layer, "call", wrap(layer, layer.call))
    try:
        yield
    finally:
        for layer in layers:
            del layer.__dict__["call"]


def call_flops(layer, inputs, outputs):
    """FLOPs of one call of `layer` on `inputs` giving `outputs` (0 for an uncounted layer)."""
    formula = _formula(layer)
    return formula(layer, _shape(inputs), _shape(outputs)) if formula else 0


def _recording_flops(layers, records):
    def on_call(layer, inputs, args, kwargs, outputs):
        records.append((layer.name, call_flops(layer, inputs, outputs)))

    return recording_calls(layers, on_call)


def trace(model, input_shape, records=None, training=False):
    """One symbolic forward pass of `model` on a batch of `input_shape` (no weights change)."""
    def forward(images):
        if records is not None:
            records.clear()  # a backend may trace more than once: keep the last pass
        return model(images, training=training)

    if training and keras.backend.backend() == "torch":
        # Keras' torch `compute_output_spec` traces on the "meta" device and, when
        # that fails, again on the CPU inside the same StatelessScope: batch norm's
        # moving statistics, updated with meta tensors by the first attempt, then
        # break the second. Run the training pass on zeros instead, in a
        # StatelessScope so that no variable changes.
        import torch

        with keras.StatelessScope(), torch.no_grad():
            forward(keras.ops.zeros(input_shape))
        return
    compute_output_spec(forward, keras.KerasTensor(input_shape, "float32"))


def counted_layers(model, include_self=True):
    """The layers of `model` (nested ones included) whose FLOPs this module counts."""
    return [
        layer
        for layer in model._flatten_layers(include_self=include_self, recursive=True)
        if _formula(layer) is not None
    ]


def flops_by_layer(model, input_shape, training=False):
    """`[(layer name, FLOPs)]` of one forward pass on a batch of `input_shape`, in call order.

    Args:
        model: a Keras model (functional or subclassed) taking one image tensor.
        input_shape: the full input shape with the batch, e.g. `(1, 512, 512, 3)`.
        training: trace the training forward pass instead (SANet's auxiliary
            head runs only there). No weight changes (batch norm's moving
            statistics included); on PyTorch this pass runs on zeros.
    """
    # A first trace builds the layers a model only creates in build() or call().
    trace(model, input_shape, training=training)
    layers = counted_layers(model)
    records = []
    with _recording_flops(layers, records):
        trace(model, input_shape, records, training=training)
    return list(records)


def winograd_multiply_fraction(output_size):
    """Winograd F(m x m, 3x3)'s multiplies over the direct convolution's: (m + 2)^2
    per tile of m x m outputs, against 9 m^2 (16 / 36 for F(2x2, 3x3))."""
    return (output_size + 2) ** 2 / (9 * output_size ** 2)



def count_flops(model, input_shape, training=False):
    """Total FLOPs (multiply-add = 2) of one forward pass on a batch of `input_shape`
    (the training forward pass with `training=True`)."""
    return sum(flops for _, flops in flops_by_layer(model, input_shape, training))


def winograd_calls(model, input_shape, training=False):
    """`(output_size, direct-convolution FLOPs)` of each call Winograd takes
    where it is on (keras_sanet Conv2D's `winograd_takes`: the kernel's shape and
    the input's sizes; whether it is on depends on the machine and the dtype)."""
    trace(model, input_shape, training=training)
    taken = []

    def on_call(layer, inputs, args, kwargs, outputs):
        if layer.winograd_takes(inputs):
            taken.append((layer.winograd_output_size, call_flops(layer, inputs, outputs)))

    layers = [layer for layer in counted_layers(model) if hasattr(layer, "winograd_takes")]
    with recording_calls(layers, on_call):
        trace(model, input_shape, taken, training=training)
    return taken


def winograd_totals(calls):
    """`(direct, executed)` FLOPs of `winograd_calls`' list: counted as direct
    convolutions, and the multiply-adds (x 2) Winograd executes, each call at its
    own layer's `winograd_output_size` (`winograd_multiply_fraction` of its FLOPs)."""
    return (sum(flops for _, flops in calls),
            sum(winograd_multiply_fraction(size) * flops for size, flops in calls))


def winograd_flops(model, input_shape, training=False):
    """Of `count_flops`, those of the calls Winograd takes where it is on,
    counted as direct convolutions."""
    return winograd_totals(winograd_calls(model, input_shape, training))[0]


def winograd_executed_flops(model, input_shape, training=False):
    """The multiply-adds (x 2) those calls execute as Winograd, each at its own
    layer's `winograd_output_size`."""
    return winograd_totals(winograd_calls(model, input_shape, training))[1]
