"""Scoring a model on a whole split: one confusion matrix, mIoU and pixel accuracy."""

import math

import keras
import numpy as np
from keras import ops
from tqdm.auto import tqdm

from keras_sanet.evaluation.inference import (
    _check_base_size,
    _check_size_multiple,
    _check_stride_ratio,
    _normalize_crop_size,
    _normalize_scales,
    inference_protocol,
    predict_logits,
)
from keras_sanet.metrics import MeanIoU


def _compiled_predictor(model, jit):
    """The model call `predict_logits` should use.

    A Keras model's `predict_on_batch` runs its compiled predict function
    (`tf.function` + XLA on TensorFlow, `jax.jit` on JAX, eager on torch by
    Keras's "auto" default), built once and re-specialised per input shape,
    so a split of same-size images compiles once per scale and window shape.
    """
    if jit and isinstance(model, keras.Model):
        return model.predict_on_batch
    return model


def summarize_confusion_matrix(confusion_matrix):
    """mIoU, pixel accuracy and per-class IoU of a `(K, K)` matrix `cm[label, pred]`.

    Same definitions as `keras_sanet.metrics.MeanIoU` / `PixelAccuracy`: the
    IoU of class k is `cm[k, k] / (row k + column k - cm[k, k])`; a class
    absent from both labels and predictions has no IoU (NaN) and is left out
    of the mean.

    Args:
        confusion_matrix: integer pixel counts, rows labels, columns predictions.

    Returns:
        `(mean_iou, pixel_accuracy, per_class_iou)`: two floats and a float64
        NumPy array (NaN for absent classes); 0.0 when the matrix is empty.

    Example:
    >>> summarize_confusion_matrix(np.array([[3, 1], [0, 4]]))
    (0.7750..., 0.875, array([0.75, 0.8 ]))
    """
    cm = np.asarray(confusion_matrix, dtype=np.float64)
    true_positives = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(union > 0, true_positives / union, np.nan)
    present = ~np.isnan(per_class)
    mean_iou = float(per_class[present].mean()) if present.any() else 0.0
    total = cm.sum()
    pixel_accuracy = float(true_positives.sum() / total) if total > 0 else 0.0
    return mean_iou, pixel_accuracy, per_class


def _as_batch(images, masks):
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim == 3:  # an unbatched dataset element
        images, masks = images[None], masks[None]
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise ValueError(
            f"Each dataset element must be (images (N, H, W, 3), masks (N, H, W)) of the "
            f"same size; got images {images.shape} and masks {masks.shape}. Use the "
            "readers of keras_sanet.data (e.g. camvid_dataset(root, 'val', batch_size=1))."
        )
    return images, masks


def _check_labels(masks, num_classes, ignore_index):
    invalid = (masks >= num_classes) | (masks < 0)
    if ignore_index is not None:
        invalid &= masks != ignore_index
    if invalid.any():
        values = sorted(int(v) for v in np.unique(masks[invalid]))[:10]
        raise ValueError(
            f"The masks hold label(s) {values} outside 0..{num_classes - 1} that are not "
            f"the ignore index {ignore_index}. Pass the dataset's num_classes (and "
            "ignore_index), or remap the labels (e.g. label_map={11: 255} for CamVid)."
        )


def evaluate_model(
    model,
    dataset,
    num_classes,
    class_names=None,
    ignore_index=255,
    scales=(1.0,),
    flip=False,
    crop_size=None,
    stride_ratio=2 / 3,
    progress=True,
    limit=None,
    jit=True,
    total_images=None,
    base_size=None,
    size_multiple=None,
):
    """Scores `model` on a split: mIoU and pixel accuracy from one confusion matrix.

    Every batch is predicted with `predict_logits` (the paper's test protocol
    when `scales`, `flip` and `crop_size` ask for it), its argmax compared
    with the mask, and the counts added to a single `(K, K)` confusion matrix
    of the whole split (int64, so no cell overflows on large splits); the
    scores come from that matrix, never from an average of per-batch scores.
    Each batch's counts come from `keras_sanet.metrics.MeanIoU`, so ignored
    pixels are handled exactly as in training-time metrics.

    Args:
        model: a Keras model (or callable) mapping `(N, H, W, 3)` 0..255 RGB
            images to `(N, H, W, K)` logits, e.g. a `SANet`.
        dataset: an iterable of `(images, masks)`, e.g. a `tf.data.Dataset`
            from `keras_sanet.data.camvid_dataset(root, "val", batch_size=1)`;
            batched `(N, H, W, 3)`/`(N, H, W)` or single `(H, W, 3)`/`(H, W)`
            elements; masks hold ids `0..K-1` or `ignore_index`.
        num_classes: `K`, the number of classes of the model and dataset.
        class_names: `K` names for the per-class table (default `class_0`...).
        ignore_index: mask value left out of the scores (`None`: none).
        scales, flip, crop_size, stride_ratio, base_size: the test protocol,
            see `predict_logits`. The paper: `scales=(0.5, 0.75, 1.0, 1.25,
            1.5, 1.75)`, `flip=True`, `crop_size` = the training crop; on
            PASCAL `base_size=520` (PyTorch-Encoding).
        size_multiple: pad whole images up to multiples of it (one compiled
            shape per bucket; not the exact protocol), see `predict_logits`.
        progress: show a tqdm progress bar over images.
        limit: score only the first `limit` images (quick checks).
        jit: call a Keras model through its compiled `predict_on_batch`
            (compiled once per input shape); `False` calls it eagerly.
        total_images: images in the dataset, if known: only sets the progress
            bar's total.

    Returns:
        A JSON-ready dict: `mean_iou`, `pixel_accuracy` (fractions 0..1),
        `per_class_iou` (`{name: iou or None when the class is absent}`),
        `confusion_matrix` (list of lists, rows labels), `num_images`,
        `num_pixels` (scored pixels), `num_classes`, `class_names`,
        `ignore_index`, the protocol of `inference_protocol` (`scales`,
        `flip`, `size_multiple` (0: exact sizes), `dtype_policy`) with
        `crop_size`, `stride_ratio` and `base_size`, `limit`, `backend`.

    Example:

    ```python
    val = keras_sanet.data.camvid_dataset("data/camvid", "val", batch_size=1)
    results = evaluate_model(model, val, num_classes=11,
                             class_names=keras_sanet.data.CAMVID_INFO.class_names,
                             scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True)
    print(format_table(results))
    ```
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes={num_classes!r} must be a positive int: the classes of the "
            "dataset, without the ignore index (11 for CamVid)."
        )
    if class_names is None:
        class_names = [f"class_{index}" for index in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names for num_classes={num_classes}; pass one name "
            "per class, in id order, or leave class_names out."
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive int (images), or None for all.")
    scales = _normalize_scales(scales)
    crop_size = _normalize_crop_size(crop_size)
    _check_stride_ratio(stride_ratio)
    base_size = _check_base_size(base_size)
    size_multiple = _check_size_multiple(size_multiple)

    predictor = _compiled_predictor(model, jit)
    # One metric computes each batch's matrix (ignore handling included); the
    # split's matrix is their int64 sum (JAX's default int32 could overflow).
    metric = MeanIoU(num_classes, ignore_index=ignore_index, sparse_y_pred=True)
    confusion_matrix = np.zeros((num_classes, num_classes), np.int64)
    num_images = 0
    known = [count for count in (limit, total_images) if count is not None]
    bar = tqdm(total=min(known) if known else None, unit="img", desc="eval", disable=not progress)
    try:
        for images, masks in dataset:
            images, masks = _as_batch(images, masks)
            if limit is not None:
                images, masks = images[: limit - num_images], masks[: limit - num_images]
            _check_labels(masks, num_classes, ignore_index)
            logits = predict_logits(
                predictor,
                images.astype("float32"),
                scales=scales,
                flip=flip,
                crop_size=crop_size,
                stride_ratio=stride_ratio,
                num_classes=num_classes,
                base_size=base_size,
                size_multiple=size_multiple,
            )
            predictions = ops.argmax(logits, axis=-1)
            metric.reset_state()
            metric.update_state(masks.astype("int32"), predictions)
            confusion_matrix += metric.confusion_matrix().astype(np.int64)
            num_images += len(images)
            bar.update(len(images))
            if limit is not None and num_images >= limit:
                break
    finally:
        bar.close()
    if num_images == 0:
        raise ValueError(
            "The dataset yielded no images; check the split (root, split name, image and "
            "mask folders)."
        )

    mean_iou, pixel_accuracy, per_class = summarize_confusion_matrix(confusion_matrix)
    return {
        "mean_iou": mean_iou,
        "pixel_accuracy": pixel_accuracy,
        "per_class_iou": {
            name: (None if math.isnan(value) else float(value))
            for name, value in zip(class_names, per_class)
        },
        "confusion_matrix": confusion_matrix.tolist(),
        "num_images": num_images,
        "num_pixels": int(confusion_matrix.sum()),
        "num_classes": num_classes,
        "class_names": class_names,
        "ignore_index": ignore_index,
        **inference_protocol(model, scales, flip, size_multiple),
        "crop_size": None if crop_size is None else list(crop_size),
        "stride_ratio": float(stride_ratio),
        "base_size": base_size,
        "limit": limit,
        "backend": keras.backend.backend(),
    }


def _percent(value):
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def format_table(results):
    """A Markdown table of per-class IoU, mIoU and pixel accuracy (percent, 2 decimals).

    Classes absent from both labels and predictions show `n/a`.

    Args:
        results: the dict of `evaluate_model`.

    Returns:
        The table as a string (no trailing newline).

    Example:
    >>> print(format_table(results))
    | Class | IoU (%) |
    | --- | ---: |
    | Sky | 91.02 |
    ...
    | **mIoU** | **65.43** |
    | **Pixel accuracy** | **90.12** |
    """
    lines = ["| Class | IoU (%) |", "| --- | ---: |"]
    for name, value in results["per_class_iou"].items():
        lines.append(f"| {str(name).replace('|', '/')} | {_percent(value)} |")
    lines.append(f"| **mIoU** | **{_percent(results['mean_iou'])}** |")
    lines.append(f"| **Pixel accuracy** | **{_percent(results['pixel_accuracy'])}** |")
    return "\n".join(lines)
