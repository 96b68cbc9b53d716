"""Conv2D -> BatchNormalization -> activation, the unit of every SANet head."""

import keras

from keras_sanet.layers.conv2d import Conv2D

# PyTorch's BatchNorm2d defaults (momentum 0.1 there = 0.9 here), which the
# paper's PyTorch code used.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def check_positive_int(name, value):
    """Raises a ValueError unless `value` is a positive Python int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def check_size_pair(name, value):
    """Returns `value` as a pair of positive ints, or raises a ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or min(value) < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints; got "
            f"{value!r}."
        )
    return tuple(value)


def check_activation(name, activation):
    """Raises a ValueError naming the fix if Keras does not know `activation`."""
    try:
        keras.activations.get(activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Unknown `{name}` {activation!r}; use a Keras activation name such "
            "as 'relu', 'sigmoid' or None (linear)."
        ) from error


def serialize_activation(activation):
    """Activation names stay names; callables go through Keras serialization."""
    if activation is None or isinstance(activation, str):
        return activation
    return keras.activations.serialize(activation)


@keras.saving.register_keras_serializable(package="keras_sanet")
class ConvBNAct(keras.layers.Layer):
    """Conv2D (no bias, He-normal) -> BatchNormalization -> activation.

    Args:
        filters: output channels.
        kernel_size: int or (int, int). Defaults to 3.
        activation: Keras activation name, or None for linear. Defaults to
            `"relu"`.
        dilation_rate: int or (int, int). Defaults to 1.
        strides: int or (int, int). Defaults to 1.
        kernel_initializer: defaults to `"he_normal"`.
        kernel_regularizer: optional regularizer of the convolution kernel.
        bn_momentum: moving-average momentum of the batch norm. Defaults to 0.9
            (PyTorch's 0.1).
        bn_epsilon: batch-norm epsilon. Defaults to 1e-5 (PyTorch's default).
        **kwargs: standard layer arguments.

    Example:
    >>> layer = ConvBNAct(16)
    >>> layer(np.zeros((2, 9, 7, 3), "float32")).shape
    (2, 9, 7, 16)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        activation="relu",
        dilation_rate=1,
        strides=1,
        kernel_initializer="he_normal",
        kernel_regularizer=None,
        bn_momentum=BN_MOMENTUM,
        bn_epsilon=BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        check_activation("activation", activation)
        self.filters = filters
        self.kernel_size = check_size_pair("kernel_size", kernel_size)
        self.dilation_rate = check_size_pair("dilation_rate", dilation_rate)
        self.strides = check_size_pair("strides", strides)
        self.activation = activation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.conv = Conv2D(
            filters,
            self.kernel_size,
            strides=self.strides,
            padding="same",
            dilation_rate=self.dilation_rate,
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            data_format="channels_last",
            dtype=self.dtype_policy,
            name="conv",
        )
        self.bn = keras.layers.BatchNormalization(
            axis=-1,
            momentum=bn_momentum,
            epsilon=bn_epsilon,
            dtype=self.dtype_policy,
            name="bn",
        )
        self.act = keras.layers.Activation(
            activation, dtype=self.dtype_policy, name="act"
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        output_shape = self.conv.compute_output_shape(input_shape)
        self.bn.build(output_shape)
        self.act.build(output_shape)

    def call(self, x, training=None):
        x = self.conv(x)
        x = self.bn(x, training=training)
        return self.act(x)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "activation": serialize_activation(self.activation),
                "dilation_rate": self.dilation_rate,
                "strides": self.strides,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
            }
        )
        return config
