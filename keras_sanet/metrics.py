"""Streaming segmentation metrics: mIoU and pixel accuracy over a whole split.

Both metrics accumulate a `(K, K)` confusion matrix (rows: label, columns:
prediction) over every batch they see and compute their value from it, so
the result covers the whole split and is never an average of per-batch
scores. They subclass `keras.metrics.MeanIoU`, which owns the matrix (the
`total_cm` variable); the update is ours (see `_count_pairs`).

Replicas: the matrix is a Keras metric variable, created with
`aggregation="sum"` and `synchronization="on_read"`. Under a `tf.distribute`
strategy each replica adds its own batches into its own copy and reading the
variable outside the replica function (`result()` at the end of `evaluate`,
`confusion_matrix()`) sums the copies, so the value is the one of the whole
split. Under JAX's `keras.distribution` the batch is one globally sharded
array, so each update already counts every replica's pixels. Keras has no
multi-process data parallelism of its own on torch: with torch DDP, all-reduce
`confusion_matrix()` across processes yourself.

Why two metrics and not one returning `{"mean_iou", "pixel_accuracy"}`: Keras
3.15 does accept a compile metric whose `result()` is a dict (its logs are
flattened, so both names print), but the saving would be one argmax and one
segment sum per batch, negligible next to the network, against a less common
metric shape. Two standard metrics print `mean_iou` and `pixel_accuracy`
from `evaluate` on any Keras 3 and can be used alone.
"""

import numbers
import warnings

import keras
import numpy as np
from keras import ops


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _widest_int_dtype():
    """int64 where the backend has it; int32 on JAX without `jax_enable_x64`.

    Converting a NumPy int64 array (no dtype requested) finds out without the
    warning JAX gives when int64 is requested explicitly.
    """
    probe = ops.convert_to_tensor(np.zeros((), "int64"))
    return keras.backend.standardize_dtype(probe.dtype)


class _SegmentationConfusionMatrix(keras.metrics.MeanIoU):
    """Confusion matrix of (mask, logits) batches, honouring an ignore index."""

    def __init__(
        self, num_classes, ignore_index=255, sparse_y_pred=False, name=None, dtype=None
    ):
        if not _is_int(num_classes):
            raise TypeError(
                f"`num_classes` must be an int (the model's number of classes); "
                f"got {num_classes!r}."
            )
        if num_classes < 1:
            raise ValueError(
                f"`num_classes` must be >= 1 (the model's number of classes); "
                f"got {num_classes}."
            )
        if ignore_index is not None and not _is_int(ignore_index):
            raise TypeError(
                "`ignore_index` must be an int label value (e.g. 255) or None; "
                f"got {ignore_index!r}."
            )
        num_classes = int(num_classes)
        ignore_index = None if ignore_index is None else int(ignore_index)
        # Kept for get_config: a saved default must not request int64 on JAX.
        self._requested_dtype = dtype
        super().__init__(
            num_classes=num_classes,
            name=name,
            dtype=dtype or _widest_int_dtype(),
            ignore_class=ignore_index,
            sparse_y_true=True,
            sparse_y_pred=sparse_y_pred,
            axis=-1,
        )

    @property
    def ignore_index(self):
        """The label value left out of the matrix (Keras's `ignore_class`)."""
        return self.ignore_class

    def _label_map(self, y_true):
        y_true = ops.convert_to_tensor(y_true)
        rank = len(y_true.shape)
        if rank == 4 and y_true.shape[-1] == 1:
            return ops.squeeze(y_true, axis=-1)
        if rank != 3:
            raise ValueError(
                f"{type(self).__name__} takes masks of shape (N, H, W) or "
                f"(N, H, W, 1) holding class ids; got shape {tuple(y_true.shape)}."
            )
        return y_true

    def _predictions(self, y_pred):
        if isinstance(y_pred, dict):
            # A SANet model's training outputs: only the final logits count.
            if "logits" not in y_pred:
                raise ValueError(
                    f"{type(self).__name__} got a dict of outputs without "
                    f"'logits' (keys: {sorted(y_pred)}). Pass the final logits."
                )
            y_pred = y_pred["logits"]
        y_pred = ops.convert_to_tensor(y_pred)
        rank = len(y_pred.shape)
        if self.sparse_y_pred:
            if rank == 4 and y_pred.shape[-1] == 1:
                y_pred = ops.squeeze(y_pred, axis=-1)
            elif rank != 3:
                raise ValueError(
                    f"With `sparse_y_pred=True`, {type(self).__name__} takes "
                    "predicted class ids of shape (N, H, W) or (N, H, W, 1); got "
                    f"shape {tuple(y_pred.shape)}. Pass `sparse_y_pred=False` "
                    "for logits."
                )
            return y_pred
        if rank != 4:
            raise ValueError(
                f"{type(self).__name__} takes logits of shape (N, H, W, K); got "
                f"shape {tuple(y_pred.shape)}. Pass `sparse_y_pred=True` for "
                "predicted class ids."
            )
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_classes} classes "
                f"but the logits have {y_pred.shape[-1]} (shape "
                f"{tuple(y_pred.shape)}). Set `num_classes` to the model's."
            )
        return y_pred

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch to the confusion matrix.

        Args:
            y_true: masks, `(N, H, W)` or `(N, H, W, 1)`, class ids or the
                ignore index.
            y_pred: logits `(N, H, W, K)` (or class ids `(N, H, W)` with
                `sparse_y_pred=True`), at the mask's size; a dict of model
                outputs is accepted and its `"logits"` used.
            sample_weight: optional per-pixel weights broadcastable to the mask.
        """
        labels = self._label_map(y_true)
        predictions = self._predictions(y_pred)
        # Logits keep their class axis until the base class takes the argmax.
        for label_dim, pred_dim in zip(labels.shape, predictions.shape[:3]):
            if label_dim is not None and pred_dim is not None and label_dim != pred_dim:
                raise ValueError(
                    f"{type(self).__name__}: predictions of (N, H, W) "
                    f"{tuple(predictions.shape)} do not match the masks' "
                    f"{tuple(labels.shape)}. Resize the logits to the mask's size "
                    "before scoring (bilinear for logits, nearest for class ids)."
                )
        if not self.sparse_y_pred:
            predictions = ops.argmax(predictions, axis=-1)
        labels = ops.reshape(ops.cast(labels, self.dtype), [-1])
        predictions = ops.reshape(ops.cast(predictions, self.dtype), [-1])
        weights = 1 if sample_weight is None else ops.convert_to_tensor(sample_weight)
        if "float" in str(getattr(weights, "dtype", "")) and "int" in self.dtype:
            # As Keras' MeanIoU does: 0.5 would count as 0 in an integer matrix.
            warnings.warn(
                f"{type(self).__name__}: float `sample_weight` is cast to the "
                f"matrix's {self.dtype}, dropping fractions. Pass integer weights, "
                "or a float `dtype` to the metric.",
                stacklevel=2,
            )
        weights = ops.convert_to_tensor(weights, dtype=self.dtype)
        if len(weights.shape) > 1:
            weights = ops.reshape(weights, [-1])
        weights = ops.broadcast_to(weights, ops.shape(labels))
        # As Keras' MeanIoU: the ignore index and any id outside 0..K-1 (labels
        # or predictions) count nothing.
        num_classes = self.num_classes
        valid = (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (
            predictions < num_classes
        )
        if self.ignore_class is not None:
            valid = valid & (labels != self.ignore_class)
        pairs = ops.where(valid, labels * num_classes + predictions, 0)
        weights = ops.where(valid, weights, 0)
        return self.total_cm.assign(
            self.total_cm + ops.reshape(self._count_pairs(pairs, weights), self.total_cm.shape)
        )

    def _count_pairs(self, pairs, weights):
        """The summed `weights` of each pair id in 0..K*K-1, in the metric's dtype.

        Not Keras' MeanIoU update: its `ops.scatter` is a Python loop over the
        pixels on PyTorch (3.4 of a 4.3 s SANet training step at 352x352,
        benchmarks/PROFILE.md section 10). A segment sum is one kernel on
        JAX and TensorFlow (and traces under `jit`); PyTorch's adds in float32,
        inexact past 2**24 pixels in one cell of a batch, so there `bincount`
        (float64 with integer weights) counts instead.
        """
        size = self.num_classes * self.num_classes
        if keras.backend.backend() == "torch":
            counts = ops.bincount(pairs, weights=weights, minlength=size)
        else:
            counts = ops.segment_sum(weights, pairs, num_segments=size)
        return ops.cast(counts, self.dtype)

    def _float_confusion_matrix(self):
        # float32 before any sum: int32 row sums (JAX's default integer width)
        # could overflow on a large split; float32 keeps ~7 significant digits.
        return ops.cast(ops.convert_to_tensor(self.total_cm), "float32")

    def _iou_per_class(self):
        cm = self._float_confusion_matrix()
        true_positives = ops.diagonal(cm)
        union = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - true_positives
        present = ops.greater(union, 0)
        iou = true_positives / ops.where(present, union, 1.0)
        return iou, present

    def confusion_matrix(self):
        """The accumulated `(K, K)` matrix as a NumPy array, `cm[label, pred]`.

        Pixel counts (weighted counts with `sample_weight`), in the metric's
        dtype: int64, or int32 on JAX without `jax_enable_x64`.
        """
        return ops.convert_to_numpy(self.total_cm)

    def per_class_iou(self):
        """IoU of each class as a NumPy float64 array of length `K`.

        NaN for a class that occurs in neither the labels nor the predictions
        (its IoU is undefined and the mean leaves it out).
        """
        cm = self.confusion_matrix().astype("float64")
        true_positives = np.diag(cm)
        union = cm.sum(axis=0) + cm.sum(axis=1) - true_positives
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, true_positives / union, np.nan)

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "sparse_y_pred": self.sparse_y_pred,
            "name": self.name,
            "dtype": self._requested_dtype,
        }



@keras.saving.register_keras_serializable(package="keras_sanet")
class MeanIoU(_SegmentationConfusionMatrix):
    """Mean intersection-over-union over a whole split, from one confusion matrix.

    IoU of class k = cm[k, k] / (row k + column k - cm[k, k]); the mean runs
    over the classes that occur in the labels or the predictions of the
    split (a class absent from both has no IoU and does not count). Pixels
    labelled `ignore_index`, or with a label outside `0..K-1`, are left out.
    `per_class_iou()` and `confusion_matrix()` give the details as NumPy.

    Args:
        num_classes: number of classes `K`.
        ignore_index: label value left out of the matrix (`None`: none).
            PASCAL Context-59 maps its background here.
        sparse_y_pred: `False` (default): predictions are `(N, H, W, K)`
            logits or probabilities, argmax taken inside; `True`: they are
            class ids `(N, H, W)`.
        name: metric name (what `evaluate` prints).
        dtype: dtype of the confusion matrix. Default: int64, or int32 on JAX
            without `jax_enable_x64` (a cell then overflows past 2**31 pixels,
            e.g. a class covering most of Cityscapes' training split).

    Example:
    >>> metric = MeanIoU(num_classes=3)
    >>> mask = np.array([[[0, 1], [2, 255]]], dtype="uint8")
    >>> logits = np.eye(3, dtype="float32")[[[[0, 1], [1, 0]]]]
    >>> metric.update_state(mask, logits)
    >>> float(metric.result())  # IoUs 1, 1/2, 0 over three classes
    0.5
    >>> metric.per_class_iou()
    array([1. , 0.5, 0. ])
    """

    def __init__(
        self, num_classes, ignore_index=255, sparse_y_pred=False, name="mean_iou",
        dtype=None,
    ):
        super().__init__(
            num_classes,
            ignore_index=ignore_index,
            sparse_y_pred=sparse_y_pred,
            name=name,
            dtype=dtype,
        )

    def result(self):
        iou, present = self._iou_per_class()
        present = ops.cast(present, "float32")
        num_present = ops.sum(present)
        return ops.sum(iou * present) / ops.where(num_present > 0, num_present, 1.0)


@keras.saving.register_keras_serializable(package="keras_sanet")
class PixelAccuracy(_SegmentationConfusionMatrix):
    """Correctly classified valid pixels / valid pixels, over a whole split.

    Valid pixels are those whose label is in `0..K-1` and not `ignore_index`.
    It keeps the same confusion matrix as `MeanIoU` (so `per_class_iou()` and
    `confusion_matrix()` work here too) and reads its trace over its sum.

    Args:
        num_classes: number of classes `K`.
        ignore_index: label value left out (`None`: none).
        sparse_y_pred: `False` (default) for logits, `True` for class ids.
        name: metric name (what `evaluate` prints).
        dtype: dtype of the confusion matrix. Default: int64, or int32 on JAX
            without `jax_enable_x64` (a cell then overflows past 2**31 pixels,
            e.g. a class covering most of Cityscapes' training split).

    Example:
    >>> metric = PixelAccuracy(num_classes=3)
    >>> mask = np.array([[[0, 1], [2, 255]]], dtype="uint8")
    >>> logits = np.eye(3, dtype="float32")[[[[0, 1], [1, 0]]]]
    >>> metric.update_state(mask, logits)
    >>> float(metric.result())  # 2 of 3 valid pixels right
    0.6666...
    """

    def __init__(
        self, num_classes, ignore_index=255, sparse_y_pred=False,
        name="pixel_accuracy", dtype=None,
    ):
        super().__init__(
            num_classes,
            ignore_index=ignore_index,
            sparse_y_pred=sparse_y_pred,
            name=name,
            dtype=dtype,
        )

    def result(self):
        cm = self._float_confusion_matrix()
        valid = ops.sum(cm)
        return ops.sum(ops.diagonal(cm)) / ops.where(valid > 0, valid, 1.0)
