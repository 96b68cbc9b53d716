"""The SANet segmentation model (Zhong et al., CVPR 2020, Figure 3)."""

import os

import keras
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution

from keras_sanet.backbones import build_backbone
from keras_sanet.backbones import get_backbone_spec
from keras_sanet.backbones.registry import validate_output_stride
from keras_sanet.layers.resize import resize_to
from keras_sanet.layers.sanet_heads import SANetHeads
from keras_sanet.models.weights_file import classes_in_weights_file
from keras_sanet.models.weights_file import weights_mismatch

ATTENTION_CHOICES = ("sa", "se", "none")


@keras.saving.register_keras_serializable(package="keras_sanet")
class SANet(keras.Model):
    """Squeeze-and-Attention Network for semantic segmentation.

    A dilated backbone feeds four SA heads (one per stage), whose class maps
    are merged at 1/4 of the input, regulated by an SE head (categorical
    loss) and accompanied during training by an auxiliary FCN head on the
    last stage. Images are float RGB in 0..255 of any height and width: the
    backbone's ImageNet preprocessing is part of the model.

    Called for inference (`model(images)`, `predict`, `evaluate`) it returns
    the final logits, `(batch, height, width, num_classes)` at the input size.
    Called with `training=True` (as `fit` does) it returns a dict with
    `"logits"`, `"se_logits"` (when `categorical_head`) and `"aux_logits"`
    (when `auxiliary_head`, at the input size), which the default loss uses.

    Args:
        backbone: backbone name, e.g. `"resnet50"`, `"efficientnetb7"`; see
            `keras_sanet.backbones.backbone_names()`.
        num_classes: number of classes (ids `0..num_classes-1`; the ignore
            index is not a class).
        output_stride: 8 (the paper), 16 or 32.
        attention: `"sa"` (squeeze-and-attention heads, the paper), `"se"`
            (FCN-SE baseline of Table 4) or `"none"` (plain FCN heads).
        categorical_head: add the SE head on the last stage (categorical loss).
        auxiliary_head: add the training-only auxiliary FCN head.
        se_mode: `"gate"` scales the merged class maps by `sigmoid(se_logits)`;
            `"loss"` uses the SE logits only in the categorical loss.
        backbone_weights: `None`, `"imagenet"` (downloaded and cached by
            Keras; needs internet) or the path of a local weights file of the
            reference backbone. Used once, at construction.
        backbone_kwargs: extra backbone options (e.g. `{"stem": "deep"}`).
        head_kwargs: extra `SANetHeads` options (e.g. the SA module switches
            `sa_pool_type`, `sa_pool_size`, `sa_convs_per_branch`,
            `sa_attention_activation`, `sa_upsampling`).
        alpha: weight of the categorical loss in the default loss.
        beta: weight of the auxiliary loss in the default loss.
        ignore_index: label value excluded from losses and metrics.
        dtype: dtype policy, e.g. `"mixed_bfloat16"`; outputs stay float32.
        **kwargs: standard `keras.Model` arguments (`name`, ...).

    Example:
    >>> model = SANet(backbone="resnet18", num_classes=11, output_stride=16)
    >>> model.predict(np.zeros((1, 64, 96, 3), "float32")).shape
    (1, 64, 96, 11)
    """

    def __init__(
        self,
        backbone="resnet50",
        num_classes=21,
        output_stride=8,
        attention="sa",
        categorical_head=True,
        auxiliary_head=True,
        se_mode="gate",
        backbone_weights=None,
        backbone_kwargs=None,
        head_kwargs=None,
        alpha=0.2,
        beta=0.8,
        ignore_index=255,
        dtype=None,
        **kwargs,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"num_classes must be an integer >= 1, got {num_classes!r}. Pass the "
                "number of classes of your dataset, without the ignore label "
                "(e.g. 11 for CamVid, 59 for PASCAL Context-59)."
            )
        get_backbone_spec(backbone)  # unknown names list the valid ones
        validate_output_stride(output_stride)
        if attention not in ATTENTION_CHOICES:
            raise ValueError(
                f"attention={attention!r} is not one of {ATTENTION_CHOICES}: 'sa' "
                "for SANet, 'se' for the FCN-SE baseline, 'none' for a plain FCN."
            )
        super().__init__(dtype=dtype, **kwargs)
        self.backbone_name = backbone.lower()
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.attention = attention
        self.categorical_head = bool(categorical_head)
        self.auxiliary_head = bool(auxiliary_head)
        self.se_mode = se_mode
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.head_kwargs = dict(head_kwargs or {})
        self.alpha = alpha
        self.beta = beta
        self.ignore_index = ignore_index

        policy = self.dtype_policy.name
        self.backbone = build_backbone(
            self.backbone_name,
            output_stride=output_stride,
            weights=backbone_weights,
            dtype=policy,
            **self.backbone_kwargs,
        )
        self.heads = SANetHeads(
            num_classes,
            attention=attention,
            categorical_head=self.categorical_head,
            auxiliary_head=self.auxiliary_head,
            se_mode=se_mode,
            dtype=policy,
            name="sanet_heads",
            **self.head_kwargs,
        )
        self._sanet_loss = None

    # -- graph -------------------------------------------------------------

    def build(self, input_shape):
        check_image_shape(input_shape)
        # Create every head variable now (the training-only auxiliary head too),
        # so JAX's stateless training finds all of them before the first step.
        # (Heads already built, e.g. by a head_branches call, keep their weights.)
        if not self.heads.built:
            self.heads.build([tuple(f.shape) for f in self.backbone.outputs])
        self.built = True

    def call(self, images, training=False):
        features = self.backbone(images, training=training)
        outputs = self.heads(features, training=training)
        size = ops.shape(images)[1:3]
        logits = resize_to(outputs["logits"], size, "bilinear")
        if not training:
            return logits
        result = {"logits": logits}
        if "se_logits" in outputs:
            result["se_logits"] = outputs["se_logits"]
        if "aux_logits" in outputs:
            result["aux_logits"] = resize_to(outputs["aux_logits"], size, "bilinear")
        return result

    def compute_output_shape(self, input_shape):
        check_image_shape(input_shape)
        return tuple(input_shape[:3]) + (self.num_classes,)

    # -- training defaults -------------------------------------------------

    def compile(self, optimizer="sgd", loss=None, metrics=None, **kwargs):
        """Like `keras.Model.compile`, with SANet's loss and metrics as defaults.

        Args:
            optimizer: any Keras optimizer (see `keras_sanet.training` for the
                paper's SGD with poly decay).
            loss: `None` for `SANetLoss(alpha, beta, ignore_index)`, or a
                callable `loss(mask, outputs)` where `outputs` is the training
                dict (or the logits tensor at evaluation).
            metrics: `None` for mIoU and pixel accuracy over the whole split,
                or a list of metrics taking `(mask, logits)`.
            **kwargs: passed to `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, ...).
        """
        from keras_sanet import losses as sanet_losses
        from keras_sanet import metrics as sanet_metrics

        if loss is None:
            loss = sanet_losses.SANetLoss(
                alpha=self.alpha, beta=self.beta, ignore_index=self.ignore_index
            )
        if metrics is None:
            metrics = [
                sanet_metrics.MeanIoU(self.num_classes, ignore_index=self.ignore_index),
                sanet_metrics.PixelAccuracy(self.num_classes, ignore_index=self.ignore_index),
            ]
        self._sanet_loss = loss
        # The loss works on the dict of training outputs, which Keras' own loss
        # container cannot match against a plain mask: compute_loss calls it.
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self._sanet_loss is None:
            raise ValueError("Call `model.compile(...)` before training or evaluating.")
        total = self._sanet_loss(y, y_pred)
        for regularization_loss in self.losses:
            total = total + ops.cast(regularization_loss, total.dtype)
        # tf.distribute sums replica gradients: scale by 1/replicas, as Keras's own losses do.
        return scale_loss_for_distribution(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Loads a `.weights.h5` file, explaining any mismatch with this model.

        Raises:
            ValueError: the file was saved from another architecture; the
                message names the first differing variable with both shapes
                and, when it can tell, the file's `num_classes`.
        """
        filepath = os.fspath(filepath)
        if not os.path.exists(filepath):
            raise ValueError(f"Weights file {filepath!r} does not exist. Check the path.")
        if filepath.endswith(".weights.h5") and not skip_mismatch:
            if not self.built:
                self.build((None, None, None, 3))
            problem = weights_mismatch(self, filepath)
            if problem:
                file_classes = classes_in_weights_file(filepath)
                hint = ""
                if file_classes is not None and file_classes != self.num_classes:
                    hint = (
                        f" The file was saved with num_classes={file_classes}, this model "
                        f"has num_classes={self.num_classes}: build SANet(num_classes="
                        f"{file_classes}, ...) to use it as is, or fine-tune from it with "
                        "`SANet.from_preset(..., num_classes=N)`, which keeps the backbone "
                        "and heads and re-initialises the classifiers."
                    )
                raise ValueError(
                    f"Weights file {filepath!r} does not match this SANet (backbone="
                    f"{self.backbone_name!r}, output_stride={self.output_stride}, attention="
                    f"{self.attention!r}, categorical_head={self.categorical_head}, "
                    f"auxiliary_head={self.auxiliary_head}): {problem}. Build the model with "
                    f"the arguments the file was saved from.{hint}"
                )
        return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)

    # -- presets (keras_sanet.presets) ---------------------------------------

    @classmethod
    def from_preset(cls, preset, num_classes=None, **kwargs):
        """Loads a SANet from a preset, checking every file's sha256 first.

        Args:
            preset: a bundled name (`keras_sanet.list_presets()`), a local
                preset folder or `file://` URL, `hf://...`, `kaggle://...`,
                or an `http(s)://` URL of a preset folder or archive
                (downloaded once and cached).
            num_classes: `None` or the preset's count loads every weight;
                another count keeps the backbone and heads and re-initialises
                the classifier layers (for fine-tuning), saying which.
            **kwargs: SANet arguments overriding the preset's (e.g. `dtype`).

        Example:
        >>> model = SANet.from_preset("sanet_resnet18_camvid")  # doctest: +SKIP
        """
        from keras_sanet.presets import load_preset

        return load_preset(preset, num_classes=num_classes, **kwargs)[0]

    def save_to_preset(
        self, preset_dir, metadata=None, overwrite=False, weights_dtype="float32",
        max_shard_size=None, **storage_options,
    ):
        """Writes this model as a preset folder; see `keras_sanet.presets.save_preset`.

        `storage_options` (e.g. `int8_min_kernel_size`) go to `save_preset`.
        """
        from keras_sanet.presets import save_preset

        return save_preset(
            self, preset_dir, metadata, overwrite=overwrite, weights_dtype=weights_dtype,
            max_shard_size=max_shard_size, **storage_options,
        )

    # -- serialization -----------------------------------------------------

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self._sanet_loss is not None:
            config["loss"] = keras.saving.serialize_keras_object(self._sanet_loss)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "output_stride": self.output_stride,
            "attention": self.attention,
            "categorical_head": self.categorical_head,
            "auxiliary_head": self.auxiliary_head,
            "se_mode": self.se_mode,
            # Weights travel with the saved model; never download again on load.
            "backbone_weights": None,
            "backbone_kwargs": self.backbone_kwargs,
            "head_kwargs": self.head_kwargs,
            "alpha": self.alpha,
            "beta": self.beta,
            "ignore_index": self.ignore_index,
        }
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)


def check_image_shape(input_shape):
    """Raises a ValueError unless `input_shape` is `(batch, height, width, 3)`."""
    shape = tuple(input_shape)
    if len(shape) != 4:
        raise ValueError(
            f"SANet takes a batch of RGB images of shape (batch, height, width, 3), "
            f"got an input of rank {len(shape)} with shape {shape}. Add the batch "
            "axis (e.g. `images[None]`) or drop extra axes."
        )
    if shape[-1] is not None and shape[-1] != 3:
        raise ValueError(
            f"SANet takes RGB images with 3 channels last, got {shape[-1]} channels "
            f"(shape {shape}). Convert grayscale or RGBA images to RGB, and use "
            "channels-last layout (batch, height, width, 3)."
        )
