"""SANet's training loss: L = L_seg + alpha * L_cat + beta * L_aux.

Every function here takes the label map first (like Keras losses) and logits
second. Label maps are `(N, H, W)` or `(N, H, W, 1)` of any integer dtype, with
class ids `0..K-1` and `ignore_index` (255) for pixels that carry no label.
Logits are cast to float32 inside, so the losses are safe under mixed precision.

Labels outside `0..K-1` that are not `ignore_index` are treated as ignored:
a compiled graph (XLA, `tf.function`, `jax.jit`) cannot raise on a tensor's
values on every backend, and indexing with them would either crash (torch) or
silently read another class (TF on GPU, JAX). The data readers validate masks
for that reason.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

_OUTPUT_KEYS = ("logits", "se_logits", "aux_logits")


def _label_map(mask):
    """Returns `mask` as an int32 `(N, H, W)` tensor, validating its rank."""
    mask = ops.convert_to_tensor(mask)
    rank = len(mask.shape)
    if rank == 4:
        if mask.shape[-1] != 1:
            raise ValueError(
                "A 4-D segmentation mask must have one channel, (N, H, W, 1); "
                f"got shape {tuple(mask.shape)}. Pass class ids, not one-hot "
                "masks: take the argmax over the last axis first."
            )
        mask = ops.squeeze(mask, axis=-1)
    elif rank != 3:
        raise ValueError(
            "The segmentation mask must have shape (N, H, W) or (N, H, W, 1); "
            f"got rank {rank} (shape {tuple(mask.shape)}). Batch single masks "
            "with `mask[None]`."
        )
    return ops.cast(mask, "int32")


def _num_classes(logits, argument_name):
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError(
            f"`{argument_name}` must have a known number of classes in its last "
            f"axis; got shape {tuple(logits.shape)}. Build the model with a fixed "
            "`num_classes`."
        )
    return int(num_classes)


def _check_same_size(labels, logits, argument_name):
    """Raises when the label map and the logits have different (static) sizes."""
    if len(logits.shape) != 4:
        raise ValueError(
            f"`{argument_name}` must have shape (N, H, W, num_classes); got "
            f"shape {tuple(logits.shape)}."
        )
    for label_dim, logit_dim in zip(labels.shape, logits.shape[:3]):
        if label_dim is not None and logit_dim is not None:
            if label_dim != logit_dim:
                raise ValueError(
                    f"`{argument_name}` of shape {tuple(logits.shape)} does not "
                    f"match the mask of shape {tuple(labels.shape)} in (N, H, W). "
                    "Resize the logits to the mask's size (the model returns them "
                    "at the input size) or resize the mask with nearest "
                    "neighbour interpolation."
                )


def _valid_pixels(labels, num_classes, ignore_index):
    """Boolean map of pixels with a class id in 0..K-1 and not ignored."""
    valid = ops.logical_and(
        ops.greater_equal(labels, 0), ops.less(labels, num_classes)
    )
    if ignore_index is not None:
        valid = ops.logical_and(valid, ops.not_equal(labels, ignore_index))
    return valid


def _check_class_weights(class_weights, num_classes=None):
    """Validates `class_weights`; returns them as a tuple of floats (or None)."""
    if class_weights is None:
        return None
    try:
        array = np.asarray(class_weights, dtype="float64")
        weights = tuple(float(w) for w in array.ravel())
    except (TypeError, ValueError) as error:
        raise TypeError(
            "`class_weights` must be a sequence of numbers, one per class; got "
            f"{class_weights!r}."
        ) from error
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(
            "`class_weights` must be finite and non-negative; got "
            f"{list(weights)}. Use 0 to switch a class off."
        )
    if num_classes is not None and len(weights) != num_classes:
        raise ValueError(
            f"`class_weights` has {len(weights)} entries but the logits have "
            f"{num_classes} classes. Pass one weight per class."
        )
    return weights


def segmentation_cross_entropy(mask, logits, ignore_index=255, class_weights=None):
    """Per-pixel softmax cross-entropy, averaged over the non-ignored pixels.

    The mean runs over every valid pixel of the whole batch (not per image),
    like `torch.nn.CrossEntropyLoss(ignore_index=..., reduction="mean")`. With
    class weights it is the weighted mean `sum(w[y] * ce) / sum(w[y])`, as in
    torch. A batch without any valid pixel gives 0 (not NaN) and zero gradients.

    Args:
        mask: label map, `(N, H, W)` or `(N, H, W, 1)`, integer class ids or
            `ignore_index`.
        logits: `(N, H, W, K)` logits at the mask's size.
        ignore_index: label value that contributes nothing (`None`: none).
        class_weights: optional sequence of `K` non-negative weights.

    Returns:
        A float32 scalar.

    Example:
    >>> mask = np.array([[[0, 1], [255, 1]]], dtype="uint8")
    >>> logits = np.zeros((1, 2, 2, 3), dtype="float32")
    >>> float(segmentation_cross_entropy(mask, logits))  # log(3)
    1.0986...
    """
    labels = _label_map(mask)
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    _check_same_size(labels, logits, "logits")
    num_classes = _num_classes(logits, "logits")
    weights = _check_class_weights(class_weights, num_classes)

    valid = _valid_pixels(labels, num_classes, ignore_index)
    # Ignored pixels (255 >= K) must never reach the gather inside the
    # cross-entropy: map them to class 0 and give them zero weight.
    safe_labels = ops.where(valid, labels, 0)
    pixel_loss = ops.sparse_categorical_crossentropy(
        safe_labels, logits, from_logits=True
    )
    pixel_weight = ops.cast(valid, "float32")
    if weights is not None:
        weight_table = ops.convert_to_tensor(weights, dtype="float32")
        pixel_weight = pixel_weight * ops.take(weight_table, safe_labels)
    total_weight = ops.sum(pixel_weight)
    # Dividing by a safe denominator (not `where(total > 0, x / total, 0)`)
    # keeps the gradient finite when every pixel is ignored.
    safe_total = ops.where(total_weight > 0, total_weight, 1.0)
    return ops.sum(pixel_weight * pixel_loss) / safe_total


def categorical_targets(mask, num_classes, ignore_index=255):
    """Multi-hot vector of the classes present in each label map.

    Args:
        mask: label map, `(N, H, W)` or `(N, H, W, 1)`.
        num_classes: number of classes `K`.
        ignore_index: label value that never counts as present (`None`: none).

    Returns:
        A float32 `(N, K)` tensor: 1 where the class occurs in the image.

    Example:
    >>> mask = np.array([[[0, 2], [255, 2]]], dtype="uint8")
    >>> categorical_targets(mask, 3)
    [[1., 0., 1.]]
    """
    labels = _label_map(mask)
    valid = _valid_pixels(labels, num_classes, ignore_index)
    # -1 matches no class, so ignored pixels mark nothing as present.
    labels = ops.where(valid, labels, -1)
    class_ids = ops.arange(num_classes, dtype="int32")
    # A boolean (N, H, W, K) comparison is the cheapest presence test that
    # runs unchanged on every backend (no one-hot floats, no scatter).
    present = ops.any(ops.equal(labels[..., None], class_ids), axis=(1, 2))
    return ops.cast(present, "float32")


def categorical_loss(mask, se_logits, ignore_index=255):
    """Binary cross-entropy of the SE head's logits against the present classes.

    Args:
        mask: label map, `(N, H, W)` or `(N, H, W, 1)`.
        se_logits: `(N, K)` class-presence logits.
        ignore_index: label value excluded from the targets.

    Returns:
        A float32 scalar, the mean over `N * K` entries.

    Example:
    >>> mask = np.array([[[0, 0], [255, 0]]], dtype="uint8")
    >>> float(categorical_loss(mask, np.zeros((1, 3), "float32")))  # log(2)
    0.6931...
    """
    se_logits = ops.cast(ops.convert_to_tensor(se_logits), "float32")
    if len(se_logits.shape) != 2:
        raise ValueError(
            "`se_logits` must have shape (N, num_classes); got shape "
            f"{tuple(se_logits.shape)}."
        )
    num_classes = _num_classes(se_logits, "se_logits")
    targets = categorical_targets(mask, num_classes, ignore_index)
    # The numerically stable form of -z*log(s(x)) - (1-z)*log(1-s(x)).
    losses = (
        ops.relu(se_logits)
        - se_logits * targets
        + ops.log1p(ops.exp(-ops.abs(se_logits)))
    )
    return ops.mean(losses)


@keras.saving.register_keras_serializable(package="keras_sanet")
class SANetLoss(keras.losses.Loss):
    """SANet's loss, `L = L_seg + alpha * L_cat + beta * L_aux`.

    - `L_seg`: `segmentation_cross_entropy` of the final logits.
    - `L_cat`: `categorical_loss` of the SE head's logits (`se_logits`).
    - `L_aux`: `segmentation_cross_entropy` of the auxiliary head's logits.

    `y_pred` is either the dict a SANet model returns in training mode
    (`{"logits", "se_logits"?, "aux_logits"?}`) or a bare logits tensor (what
    the model returns at inference: then the loss is `L_seg` alone, which is
    what `evaluate` reports). Absent terms are left out of the sum.
    Use `terms(mask, outputs)` to log the three parts separately.

    The loss is one scalar: a mean over the valid pixels of the whole batch
    (like torch's `CrossEntropyLoss(ignore_index=255)`), so Keras's per-sample
    `reduction` does not apply and `sample_weight` is not accepted: set pixels
    to `ignore_index` or use `class_weights` instead. `class_weights` weight
    both pixel-wise terms; the categorical term is unweighted.

    Label values outside `0..K-1` other than `ignore_index` are treated as
    ignored: a compiled graph cannot raise on tensor values on every backend,
    which is why the data readers validate masks when they load them.

    Args:
        alpha: weight of the categorical (SE) loss, >= 0. Paper: 0.2.
        beta: weight of the auxiliary loss, >= 0. Paper: 0.8.
        ignore_index: label value that contributes nothing (`None`: none).
        class_weights: optional sequence of `num_classes` non-negative pixel
            weights (checked against the logits at call time).
        name: name of the loss.
        dtype: accepted for Keras compatibility; the loss always computes in
            float32, whatever the logits' dtype.

    Example:
    >>> loss_fn = SANetLoss(alpha=0.2, beta=0.8)
    >>> mask = np.zeros((2, 8, 8), dtype="uint8")
    >>> outputs = {"logits": np.zeros((2, 8, 8, 3), "float32"),
    ...            "se_logits": np.zeros((2, 3), "float32"),
    ...            "aux_logits": np.zeros((2, 8, 8, 3), "float32")}
    >>> total = loss_fn(mask, outputs)  # (1 + 0.8) * log(3) + 0.2 * log(2)
    >>> parts = loss_fn.terms(mask, outputs)  # {"seg", "cat", "aux"}
    """

    def __init__(
        self,
        alpha=0.2,
        beta=0.8,
        ignore_index=255,
        class_weights=None,
        name="sanet_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        for arg_name, value in (("alpha", alpha), ("beta", beta)):
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise TypeError(
                    f"`{arg_name}` must be a finite number (a loss weight); got "
                    f"{value!r}."
                )
            if value < 0:
                raise ValueError(
                    f"`{arg_name}` must be >= 0 (it weights a loss term); got "
                    f"{value}. Use 0 to switch the term off."
                )
        if ignore_index is not None and not isinstance(ignore_index, numbers.Integral):
            raise TypeError(
                "`ignore_index` must be an int label value (e.g. 255) or None; "
                f"got {ignore_index!r}."
            )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.class_weights = _check_class_weights(class_weights)

    def _split_outputs(self, y_pred):
        if isinstance(y_pred, dict):
            unknown = sorted(set(y_pred) - set(_OUTPUT_KEYS))
            if unknown or "logits" not in y_pred:
                raise ValueError(
                    f"SANetLoss takes a dict with keys {list(_OUTPUT_KEYS)} "
                    f"('logits' required); got keys {sorted(y_pred)}. Pass the "
                    "model's training outputs unchanged, or the logits alone."
                )
            return y_pred["logits"], y_pred.get("se_logits"), y_pred.get("aux_logits")
        return y_pred, None, None

    def terms(self, y_true, y_pred):
        """Returns the unweighted terms: a dict with `seg` and, when the
        corresponding output is present, `cat` and `aux` (float32 scalars)."""
        logits, se_logits, aux_logits = self._split_outputs(y_pred)
        terms = {
            "seg": segmentation_cross_entropy(
                y_true, logits, self.ignore_index, self.class_weights
            )
        }
        if se_logits is not None:
            terms["cat"] = categorical_loss(y_true, se_logits, self.ignore_index)
        if aux_logits is not None:
            terms["aux"] = segmentation_cross_entropy(
                y_true, aux_logits, self.ignore_index, self.class_weights
            )
        return terms

    def call(self, y_true, y_pred):
        terms = self.terms(y_true, y_pred)
        total = terms["seg"]
        if "cat" in terms:
            total = total + self.alpha * terms["cat"]
        if "aux" in terms:
            total = total + self.beta * terms["aux"]
        return total

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras's base __call__ would cast the mask to float and apply a
        # per-sample reduction; our loss is already a mean over valid pixels.
        if sample_weight is not None:
            raise ValueError(
                "SANetLoss does not take `sample_weight`: its value is a mean "
                "over the valid pixels of the batch. Set pixels to "
                "`ignore_index` to drop them, or pass `class_weights`."
            )
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred)

    def get_config(self):
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "ignore_index": self.ignore_index,
            "class_weights": (
                None if self.class_weights is None else list(self.class_weights)
            ),
            "name": self.name,
        }
