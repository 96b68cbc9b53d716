"""SANet's heads (Figure 3): four attention heads, the SE head and the aux head."""

import numbers

import keras
from keras import ops

from keras_sanet.layers.conv2d import Conv2D
from keras_sanet.layers.conv_bn_act import ConvBNAct
from keras_sanet.layers.conv_bn_act import check_positive_int
from keras_sanet.layers.conv_bn_act import serialize_activation
from keras_sanet.layers.resize import resize_to
from keras_sanet.layers.squeeze_attention import SqueezeAttention
from keras_sanet.layers.squeeze_attention import validate_squeeze_attention_args
from keras_sanet.layers.squeeze_excitation import SqueezeExcitation

ATTENTIONS = ("sa", "se", "none")
SE_MODES = ("gate", "loss")
NUM_STAGES = 4


def _normalize_head_channels(head_channels):
    if head_channels is None:
        return None
    if isinstance(head_channels, numbers.Integral) and not isinstance(
        head_channels, bool
    ):
        head_channels = [int(head_channels)] * NUM_STAGES
    if (
        not isinstance(head_channels, (list, tuple))
        or len(head_channels) != NUM_STAGES
        or not all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1
            for c in head_channels
        )
    ):
        raise ValueError(
            "`head_channels` must be None (C_i // 4 per head, as in the paper), a "
            f"positive int for all heads, or a list of 4 positive ints; got "
            f"{head_channels!r}."
        )
    return [int(c) for c in head_channels]


def _check_feature_shapes(shapes):
    if (
        not isinstance(shapes, (list, tuple))
        or len(shapes) != NUM_STAGES
        # A single tensor's shape is a tuple of ints, not a list of shapes.
        or any(isinstance(shape, numbers.Integral) for shape in shapes)
    ):
        raise ValueError(
            "SANetHeads expects `features` = [C2, C3, C4, C5], a list of 4 NHWC "
            f"tensors (one per backbone stage); got {shapes!r}. Pass the four "
            "stage outputs of the backbone as a list."
        )
    for index, shape in enumerate(shapes):
        if shape is None or len(shape) != 4:
            raise ValueError(
                f"SANetHeads feature {index} (C{index + 2}) must be a rank-4 NHWC "
                f"tensor; got shape {shape}. Pass (batch, height, width, "
                "channels) feature maps."
            )
        if shape[-1] is None:
            raise ValueError(
                f"SANetHeads feature {index} (C{index + 2}) needs a known channel "
                f"count; got shape {shape}. Give the backbone output a static "
                "last dimension."
            )


@keras.saving.register_keras_serializable(package="keras_sanet")
class SANetHeads(keras.layers.Layer):
    """The heads of SANet (Zhong et al., CVPR 2020, Figure 3).

    Head i sits on stage feature i of `[C2, C3, C4, C5]`: an attention module
    of `C_i // 4` channels (or `head_channels`), then a 1x1 conv to
    `num_classes`. Heads 2-4 are resized (bilinear) to head 1's size and the
    four class maps summed: the merged logits, at C2's resolution (1/4 of the
    image; the model upsamples them to the input size).

    - `attention="sa"`: SqueezeAttention (SANet). `"se"`: `sa_convs_per_branch`
      x ConvBNAct then SqueezeExcitation scaling (the FCN-SE baseline of the
      paper's Table 4). `"none"`: the ConvBNAct stack only (plain FCN).
    - SE head (`categorical_head=True`) on C5: global average pool -> Dense(C5
      // se_reduction) -> ReLU -> Dense(num_classes) = per-image class-presence
      logits `se_logits`, trained with the categorical loss. `se_mode="gate"`
      also scales the merged logits channel-wise by `sigmoid(se_logits)` (our
      reading of "regularized by a SE head"); `"loss"` leaves the logits alone
      (EncNet's SE-loss). Ignored when `categorical_head=False`.
    - Auxiliary FCN head (`auxiliary_head=True`) on C5: ConvBNAct(C5 // 4, 3x3)
      -> Dropout -> 1x1 conv, computed only when `training` is truthy.

    All outputs are float32, whatever the dtype policy.

    Args:
        num_classes: number of classes K.
        attention: `"sa"`, `"se"` or `"none"`.
        categorical_head: whether to build the SE head.
        auxiliary_head: whether to build the auxiliary head.
        se_mode: `"gate"` or `"loss"`.
        head_channels: None (C_i // 4), an int for all heads, or 4 ints.
        se_reduction: reduction of the SE head's hidden layer (and of the
            SqueezeExcitation modules when `attention="se"`).
        aux_dropout: dropout rate of the auxiliary head.
        sa_pool_type, sa_pool_size, sa_convs_per_branch,
        sa_attention_activation, sa_upsampling: the SqueezeAttention switches
            (`sa_convs_per_branch` also sets the conv count of "se"/"none").
        **kwargs: standard layer arguments.

    Call arguments:
        features: `[C2, C3, C4, C5]` NHWC tensors.
        training: batch-norm/dropout mode; the aux head runs only when truthy.

    Returns:
        A dict: `"logits"` (N, h2, w2, K); `"se_logits"` (N, K) if
        `categorical_head`; `"aux_logits"` (N, h5, w5, K) if `auxiliary_head`
        and training.

    Example:
    >>> heads = SANetHeads(5)
    >>> features = [np.zeros((1, 16, 16, 32), "float32")] + [
    ...     np.zeros((1, 8, 8, c), "float32") for c in (32, 64, 64)]
    >>> {k: v.shape for k, v in heads(features).items()}
    {'logits': (1, 16, 16, 5), 'se_logits': (1, 5)}
    """

    def __init__(
        self,
        num_classes,
        attention="sa",
        categorical_head=True,
        auxiliary_head=True,
        se_mode="gate",
        head_channels=None,
        se_reduction=4,
        aux_dropout=0.1,
        sa_pool_type="avg",
        sa_pool_size=2,
        sa_convs_per_branch=2,
        sa_attention_activation="relu",
        sa_upsampling="nearest",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 1
        ):
            raise ValueError(
                "`num_classes` must be a positive integer (e.g. 59 for PASCAL "
                f"Context-59); got {num_classes!r}."
            )
        if attention not in ATTENTIONS:
            raise ValueError(
                f"Unknown attention {attention!r}; use 'sa' (SANet), 'se' "
                "(FCN-SE baseline) or 'none' (plain FCN)."
            )
        if se_mode not in SE_MODES:
            raise ValueError(
                f"Unknown se_mode {se_mode!r}; use 'gate' (scale the logits by "
                "sigmoid(se_logits)) or 'loss' (se_logits feed the loss only)."
            )
        for name, value in (
            ("categorical_head", categorical_head),
            ("auxiliary_head", auxiliary_head),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be True or False; got {value!r}.")
        check_positive_int("se_reduction", se_reduction)
        if not isinstance(aux_dropout, numbers.Real) or not 0 <= aux_dropout < 1:
            raise ValueError(
                f"`aux_dropout` must be a rate in [0, 1); got {aux_dropout!r}."
            )
        self.num_classes = int(num_classes)
        self.attention = attention
        self.categorical_head = categorical_head
        self.auxiliary_head = auxiliary_head
        self.se_mode = se_mode
        self.head_channels = _normalize_head_channels(head_channels)
        self.se_reduction = se_reduction
        self.aux_dropout = float(aux_dropout)
        self.sa_pool_size = validate_squeeze_attention_args(
            sa_pool_type,
            sa_pool_size,
            sa_convs_per_branch,
            sa_attention_activation,
            sa_upsampling,
        )
        self.sa_pool_type = sa_pool_type
        self.sa_convs_per_branch = sa_convs_per_branch
        self.sa_attention_activation = sa_attention_activation
        self.sa_upsampling = sa_upsampling

    def _module_channels(self, features_shape):
        if self.head_channels is not None:
            return self.head_channels
        return [max(1, shape[-1] // 4) for shape in features_shape]

    def build(self, features_shape):
        _check_feature_shapes(features_shape)
        policy = self.dtype_policy
        channels = self._module_channels(features_shape)
        # Flat lists (not lists of lists) keep the weight paths simple.
        self.head_attention = []  # SqueezeAttention per head ("sa")
        self.head_convs = []  # convs_per_branch per head, head-major ("se", "none")
        self.head_se = []  # SqueezeExcitation per head ("se")
        self.head_classifiers = []
        for index, (shape, filters) in enumerate(zip(features_shape, channels)):
            prefix = f"head{index + 1}"
            if self.attention == "sa":
                module = SqueezeAttention(
                    filters,
                    pool_type=self.sa_pool_type,
                    pool_size=self.sa_pool_size,
                    convs_per_branch=self.sa_convs_per_branch,
                    attention_activation=self.sa_attention_activation,
                    upsampling=self.sa_upsampling,
                    dtype=policy,
                    name=f"{prefix}_sa",
                )
                module.build(shape)
                self.head_attention.append(module)
            else:
                conv_shape = tuple(shape)
                for conv_index in range(self.sa_convs_per_branch):
                    conv = ConvBNAct(
                        filters, 3, dtype=policy, name=f"{prefix}_conv{conv_index + 1}"
                    )
                    conv.build(conv_shape)
                    conv_shape = conv.compute_output_shape(conv_shape)
                    self.head_convs.append(conv)
                if self.attention == "se":
                    se = SqueezeExcitation(
                        self.se_reduction, dtype=policy, name=f"{prefix}_se"
                    )
                    se.build(conv_shape)
                    self.head_se.append(se)
            classifier = Conv2D(
                self.num_classes, 1, dtype=policy, name=f"{prefix}_classifier"
            )
            classifier.build(tuple(shape[:-1]) + (filters,))
            self.head_classifiers.append(classifier)

        c5_shape = tuple(features_shape[-1])
        c5_channels = c5_shape[-1]
        if self.categorical_head:
            self.se_head_hidden = keras.layers.Dense(
                max(1, c5_channels // self.se_reduction),
                activation="relu",
                dtype=policy,
                name="se_head_hidden",
            )
            self.se_head_hidden.build((c5_shape[0], c5_channels))
            self.se_head_logits = keras.layers.Dense(
                self.num_classes, dtype=policy, name="se_head_logits"
            )
            self.se_head_logits.build((c5_shape[0], self.se_head_hidden.units))
        if self.auxiliary_head:
            self.aux_conv = ConvBNAct(
                max(1, c5_channels // 4), 3, dtype=policy, name="aux_conv"
            )
            self.aux_conv.build(c5_shape)
            aux_shape = self.aux_conv.compute_output_shape(c5_shape)
            self.aux_dropout_layer = keras.layers.Dropout(
                self.aux_dropout, dtype=policy, name="aux_dropout"
            )
            # Built now, although only training calls it: Keras' JAX trainer
            # runs a whole eager forward pass before every `predict` /
            # `predict_on_batch` while any layer of the model is unbuilt
            # (benchmarks/PROFILE.md).
            self.aux_dropout_layer.build(aux_shape)
            self.aux_classifier = Conv2D(
                self.num_classes, 1, dtype=policy, name="aux_classifier"
            )
            self.aux_classifier.build(aux_shape)

    def _check_features(self, features):
        if not isinstance(features, (list, tuple)):
            _check_feature_shapes(features)
        _check_feature_shapes([getattr(f, "shape", None) for f in features])
        if not self.built:
            self.build([tuple(f.shape) for f in features])
        return list(features)

    def _head_module(self, index, x, training):
        """The attention (or plain) module of head `index`: C_i -> head channels."""
        if self.attention == "sa":
            return self.head_attention[index](x, training=training)
        start = index * self.sa_convs_per_branch
        for conv in self.head_convs[start : start + self.sa_convs_per_branch]:
            x = conv(x, training=training)
        if self.attention == "se":
            x = self.head_se[index](x)
        return x

    def head_logits(self, features, training=None):
        """The four per-head class maps, each at its own stage's resolution."""
        features = self._check_features(features)
        return [
            self.head_classifiers[index](self._head_module(index, x, training))
            for index, x in enumerate(features)
        ]

    def head_branches(self, features):
        """`(output, main, attention)` of each SA head, in inference mode.

        For drawing the attention maps of the paper's Figure 6. Requires
        `attention="sa"`.
        """
        if self.attention != "sa":
            raise ValueError(
                f"head_branches needs attention='sa' heads; this layer has "
                f"attention={self.attention!r}. Build SANetHeads(attention='sa')."
            )
        features = self._check_features(features)
        return [
            module(x, training=False, return_branches=True)
            for module, x in zip(self.head_attention, features)
        ]

    def call(self, features, training=None):
        class_maps = [
            ops.cast(logits, "float32")
            for logits in self.head_logits(features, training=training)
        ]
        size = ops.shape(class_maps[0])[1:3]
        merged = class_maps[0]
        for class_map in class_maps[1:]:
            merged = merged + resize_to(class_map, size, "bilinear")
        se_logits = None
        if self.categorical_head:
            pooled = ops.mean(features[-1], axis=(1, 2))
            se_logits = ops.cast(
                self.se_head_logits(self.se_head_hidden(pooled)), "float32"
            )
            if self.se_mode == "gate":
                gate = ops.sigmoid(se_logits)
                merged = merged * ops.expand_dims(ops.expand_dims(gate, 1), 1)
        outputs = {"logits": merged}
        if se_logits is not None:
            outputs["se_logits"] = se_logits
        if self.auxiliary_head and training:
            aux = self.aux_conv(features[-1], training=training)
            aux = self.aux_dropout_layer(aux, training=training)
            outputs["aux_logits"] = ops.cast(self.aux_classifier(aux), "float32")
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "attention": self.attention,
                "categorical_head": self.categorical_head,
                "auxiliary_head": self.auxiliary_head,
                "se_mode": self.se_mode,
                "head_channels": self.head_channels,
                "se_reduction": self.se_reduction,
                "aux_dropout": self.aux_dropout,
                "sa_pool_type": self.sa_pool_type,
                "sa_pool_size": self.sa_pool_size,
                "sa_convs_per_branch": self.sa_convs_per_branch,
                "sa_attention_activation": serialize_activation(
                    self.sa_attention_activation
                ),
                "sa_upsampling": self.sa_upsampling,
            }
        )
        return config
