"""The squeeze-and-excitation (SE) channel re-weighting of Hu et al."""

import keras
from keras import ops

from keras_sanet.layers.conv_bn_act import check_positive_int


@keras.saving.register_keras_serializable(package="keras_sanet")
class SqueezeExcitation(keras.layers.Layer):
    """Squeeze-and-excitation: w = sigmoid(FC(ReLU(FC(GAP(x))))).

    The hidden layer has `max(1, C // reduction)` units. Standalone the layer
    re-weights its input channel-wise (`w * x`); given `residual`, it computes
    the SANet paper's "updated" residual form `w * x + residual`
    (X_out = w * X_in + F(X_in)).

    Args:
        reduction: channel reduction ratio of the hidden layer. Defaults to 4.
        **kwargs: standard layer arguments.

    Call arguments:
        x: NHWC tensor to re-weight.
        residual: optional tensor of `x`'s shape added to the re-weighted `x`.

    Example:
    >>> layer = SqueezeExcitation(reduction=4)
    >>> layer(np.ones((2, 5, 5, 16), "float32")).shape
    (2, 5, 5, 16)
    """

    def __init__(self, reduction=4, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("reduction", reduction)
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "SqueezeExcitation needs a known channel count; give the input "
                f"a static last dimension (got shape {input_shape})."
            )
        self.squeeze = keras.layers.Dense(
            max(1, channels // self.reduction),
            activation="relu",
            dtype=self.dtype_policy,
            name="squeeze",
        )
        self.excite = keras.layers.Dense(
            channels, activation="sigmoid", dtype=self.dtype_policy, name="excite"
        )
        self.squeeze.build((input_shape[0], channels))
        self.excite.build((input_shape[0], self.squeeze.units))

    def channel_weights(self, x):
        """The per-image channel weights w, shape (N, 1, 1, C)."""
        pooled = ops.mean(x, axis=(1, 2))
        weights = self.excite(self.squeeze(pooled))
        return ops.expand_dims(ops.expand_dims(weights, 1), 1)

    def call(self, x, residual=None):
        output = self.channel_weights(x) * x
        if residual is not None:
            output = output + residual
        return output

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction})
        return config
