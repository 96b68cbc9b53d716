"""The `tf.data` pipeline from `(image_path, mask_path)` pairs to training batches.

Order of operations (each step optional as documented):

    scan (validate_pairs, once) -> file list -> [shuffle] -> [repeat]
    -> decode + label_map + guard -> [augment | eval resize] -> [batch] -> [prefetch]

With `cache`, decoded uint8 pairs are cached before shuffling, so later
epochs skip decoding. The in-pipeline guard re-checks every mapped mask
(label range, size against the image) with cheap `tf.debugging` ops, so a
file that changed after the scan fails loudly instead of training garbage.

The pipeline is plain `tf.data`, so it feeds `model.fit` on every Keras
backend (TensorFlow, JAX, PyTorch).
"""

import numbers

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_sanet.data.augment import (
    DEFAULT_SCALE_RANGE,
    check_scale_range,
    normalize_size,
    pad_to_size,
    resize_pair,
    train_augment,
)
from keras_sanet.data.dataset_info import IGNORE_INDEX, DatasetInfo
from keras_sanet.data.label_map import label_lookup_table
from keras_sanet.data.validation import check_num_classes, validate_pairs

AUTOTUNE = tf.data.AUTOTUNE
MASK_DECODERS = ("auto", "tf", "pillow")


def _resolve_classes(num_classes, dataset_info, label_map, ignore_index):
    if dataset_info is not None:
        if not isinstance(dataset_info, DatasetInfo):
            raise TypeError(
                f"dataset_info must be a DatasetInfo, got {type(dataset_info).__name__}; use "
                "keras_sanet.data.get_dataset_info(name) or build a DatasetInfo."
            )
        if num_classes is not None and num_classes != dataset_info.num_classes:
            raise ValueError(
                f"num_classes={num_classes} does not match dataset {dataset_info.name!r}, "
                f"which has {dataset_info.num_classes} classes "
                f"({', '.join(dataset_info.class_names)}). Leave num_classes out, or pass a "
                "DatasetInfo whose class list matches your remapped labels."
            )
        num_classes = dataset_info.num_classes
        label_map = dataset_info.label_map if label_map is None else label_map
        ignore_index = dataset_info.ignore_index
    if num_classes is None:
        raise ValueError(
            "The number of classes is unknown: pass num_classes= (e.g. num_classes=11) or "
            "dataset_info=get_dataset_info(name)."
        )
    check_num_classes(num_classes, ignore_index)
    return int(num_classes), label_map or None, int(ignore_index)


def _check_options(batch_size, repeat, seed, image_pad_value, mask_decoder):
    if batch_size is not None and (
        not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size={batch_size!r} must be a positive int or None (unbatched).")
    if not isinstance(repeat, bool) and (
        not isinstance(repeat, numbers.Integral) or repeat < 1
    ):
        raise ValueError(
            f"repeat={repeat!r} must be False (one pass), True (forever) or a positive int "
            "(that many passes)."
        )
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise ValueError(f"seed={seed!r} must be an int, or None for a random seed.")
    values = np.atleast_1d(np.asarray(image_pad_value, dtype=np.float64))
    if values.shape not in ((1,), (3,)) or np.any((values < 0) | (values > 255)):
        raise ValueError(
            f"image_pad_value={image_pad_value!r} must be one value or an (R, G, B) triple in "
            "0..255, e.g. 0 (black, as PyTorch-Encoding) or (123.675, 116.28, 103.53) "
            "(the ImageNet mean)."
        )
    if mask_decoder not in MASK_DECODERS:
        raise ValueError(
            f"mask_decoder={mask_decoder!r} is not one of {', '.join(MASK_DECODERS)}; 'auto' "
            "reads palette ('P') PNGs with Pillow and the rest with tf.io."
        )


def _peek_mask_mode(mask_path):
    try:
        with Image.open(mask_path) as mask:
            return mask.mode
    except Exception as error:  # Pillow raises several types for broken files.
        raise ValueError(
            f"The mask {mask_path!r} cannot be opened ({error}); fix the file or the pair list."
        ) from error


def _check_eval_batching(pairs, report, batch_size):
    sizes = {}
    for (image_path, _), size in zip(pairs, report.image_sizes):
        sizes.setdefault(size, image_path)
        if len(sizes) > 1:
            (size_a, path_a), (size_b, path_b) = list(sizes.items())[:2]
            raise ValueError(
                f"Cannot batch evaluation images of different sizes with batch_size="
                f"{batch_size}: {path_a!r} is {size_a[1]}x{size_a[0]} but {path_b!r} is "
                f"{size_b[1]}x{size_b[0]} (width x height). Use batch_size=1, "
                "eval_pad_size=(height, width) to pad every pair to one size (exact scores), "
                "or eval_size=(height, width) to resize every pair."
            )


def _decode_mask_with_pillow(path):
    with Image.open(path.decode()) as mask:
        # Palette ("P") masks: np.asarray gives the palette indices, i.e. the ids.
        return np.asarray(mask, dtype=np.uint8)


def _make_loader(table, num_classes, ignore_index, use_pillow):
    table = tf.constant(table)

    def load(image_path, mask_path):
        image = tf.io.decode_image(
            tf.io.read_file(image_path), channels=3, dtype=tf.uint8, expand_animations=False
        )
        if use_pillow:
            mask = tf.numpy_function(_decode_mask_with_pillow, [mask_path], tf.uint8)
            mask.set_shape([None, None])
        else:
            # tf.io expands palettes to colours, so this path is for mode "L" masks only.
            mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0]
        mask = tf.gather(table, tf.cast(mask, tf.int32))
        bad = (mask >= num_classes) & (mask != ignore_index)
        label_guard = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [
                "Invalid label in mask",
                mask_path,
                "value (after label_map):",
                tf.reduce_max(tf.where(bad, mask, tf.zeros_like(mask))),
                f"valid: 0..{num_classes - 1} and {ignore_index}. The file changed after the "
                "scan, or validate=False was used: rebuild the dataset with validate=True "
                "to get the fix.",
            ],
        )
        size_guard = tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(image)[:2], tf.shape(mask))),
            [
                "Mask size differs from its image:",
                mask_path,
                tf.shape(mask),
                image_path,
                tf.shape(image)[:2],
                "Regenerate the mask at the image's size or fix the pairing.",
            ],
        )
        with tf.control_dependencies([label_guard, size_guard]):
            return tf.identity(image), tf.identity(mask)

    return load


def segmentation_dataset(
    pairs,
    num_classes=None,
    *,
    dataset_info=None,
    label_map=None,
    ignore_index=IGNORE_INDEX,
    augment=False,
    crop_size=None,
    base_size=None,
    scale_range=DEFAULT_SCALE_RANGE,
    flip=True,
    image_pad_value=0.0,
    eval_size=None,
    eval_pad_size=None,
    shuffle=False,
    seed=None,
    repeat=False,
    batch_size=None,
    drop_remainder=False,
    num_parallel_calls=AUTOTUNE,
    prefetch=AUTOTUNE,
    cache=False,
    validate=True,
    progress=True,
    mask_decoder="auto",
):
    """A `tf.data.Dataset` of `(image, mask)` from `(image_path, mask_path)` pairs.

    Elements: `image` float32 `(H, W, 3)` RGB in 0..255 (what every model
    of ours takes) and `mask` uint8 `(H, W)` with ids `0..num_classes-1` and
    `ignore_index`; a leading batch axis when `batch_size` is set.

    Args:
        pairs: list of `(image_path, mask_path)`; images PNG/JPEG (any
            mode, converted to RGB), masks single-channel PNG of class ids
            (mode "L", or palette "P" whose indices are the ids).
        num_classes: number of classes; required unless `dataset_info`.
        dataset_info: a `DatasetInfo` giving `num_classes`, `ignore_index`
            and the default `label_map`.
        label_map: `{raw_id: training_id}` applied to every mask, e.g.
            `{11: 255}`.
        ignore_index: the mask value losses and metrics skip.
        augment: training augmentation (random scale, pad, crop, flip; see
            `train_augment`). Needs `crop_size`.
        crop_size: int or `(height, width)` of augmented outputs.
        base_size: long side at scale 1; `None` = each image's own long side.
        scale_range: `(low, high)` random scale, default `(0.5, 2.0)`.
        flip: random horizontal flip (with `augment`).
        image_pad_value: fill of padded image pixels, a value or RGB triple.
        eval_size: without `augment`, resize every pair to this
            `(height, width)` (mask nearest). Off by default: evaluate at the
            native size.
        shuffle: shuffle the pairs each epoch (the whole list).
        seed: int seed of shuffling and augmentation; the same seed gives
            the same sequence of elements, and each epoch still differs.
            `None` = a random seed.
        repeat: `False` (one pass), `True` (forever) or an int of passes.
        batch_size: batch elements; `None` leaves them unbatched. Without
            `augment` or `eval_size` every image in a batch must have the
            same size (checked by the scan).
        drop_remainder: drop the last incomplete batch.
        num_parallel_calls: parallel decoding/augmentation (`AUTOTUNE`,
            an int, or `None` for sequential).
        prefetch: batches prepared ahead (`AUTOTUNE`, an int, or 0/`None`).
        cache: `True` caches decoded pairs in memory, a string caches them
            in that file; decoding then runs once.
        validate: scan every pair once before building (see
            `validate_pairs`). `False` skips the scan: unsafe, a bad label
            then only fails when that file is read by the pipeline, and
            format problems (colour or JPEG masks) are not caught at all.
        progress: tqdm progress bar during the scan.
        mask_decoder: `"auto"` (Pillow for palette PNGs, else `tf.io`),
            `"tf"` or `"pillow"`.

    Returns:
        A `tf.data.Dataset`.

    Example:

    ```python
    pairs = folder_pairs("data/images", "data/masks")
    ds = segmentation_dataset(pairs, num_classes=3, augment=True,
                              crop_size=(256, 256), shuffle=True, seed=0,
                              batch_size=8, repeat=True)
    model.fit(ds, steps_per_epoch=100)
    ```
    """
    num_classes, label_map, ignore_index = _resolve_classes(
        num_classes, dataset_info, label_map, ignore_index
    )
    _check_options(batch_size, repeat, seed, image_pad_value, mask_decoder)
    pairs = [(str(image), str(mask)) for image, mask in pairs]
    if not pairs:
        raise ValueError(
            "There are no image/mask pairs (the split or list is empty); point the reader at "
            "a folder or list file that has pairs."
        )
    if augment:
        if crop_size is None:
            raise ValueError(
                "augment=True needs crop_size= (an int or (height, width)): random scaling "
                "gives every image another size, and the crop makes batches uniform."
            )
        crop_size = normalize_size(crop_size, "crop_size")
        check_scale_range(scale_range)
        if base_size is not None and (not isinstance(base_size, numbers.Number) or base_size <= 0):
            raise ValueError(
                f"base_size={base_size!r} must be a positive number (the long side at scale "
                "1, e.g. 520 as in PyTorch-Encoding) or None (each image's own long side)."
            )
    if eval_size is not None:
        eval_size = normalize_size(eval_size, "eval_size")
    if eval_pad_size is not None:
        if eval_size is not None:
            raise ValueError(
                "Pass eval_size (resize every pair) or eval_pad_size (pad every pair), not "
                "both."
            )
        eval_pad_size = normalize_size(eval_pad_size, "eval_pad_size")

    table = label_lookup_table(label_map)
    report = None
    if validate:
        report = validate_pairs(pairs, num_classes, ignore_index, label_map, progress=progress)
        if (
            not augment
            and eval_size is None
            and eval_pad_size is None
            and batch_size not in (None, 1)
        ):
            _check_eval_batching(pairs, report, batch_size)
    if mask_decoder == "auto":
        modes = report.mask_modes if report is not None else {_peek_mask_mode(pairs[0][1])}
        use_pillow = "P" in modes
    else:
        use_pillow = mask_decoder == "pillow"
    load = _make_loader(table, num_classes, ignore_index, use_pillow)

    image_paths, mask_paths = (list(paths) for paths in zip(*pairs))
    ds = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    if cache:
        ds = ds.map(load, num_parallel_calls=num_parallel_calls)
        ds = ds.cache("" if cache is True else str(cache))
    if shuffle:
        # With cache the buffer holds decoded pairs (the whole split in memory);
        # without it, only the path strings.
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    if repeat is True:
        ds = ds.repeat()
    elif repeat:
        ds = ds.repeat(int(repeat))
    if not cache:
        ds = ds.map(load, num_parallel_calls=num_parallel_calls)

    if augment:
        # One random int64 per element, drawn afresh each epoch (deterministic given
        # `seed`), feeds the stateless augmentation ops.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def augment_pair(pair, element_seed):
            image, mask = pair
            return train_augment(
                tf.cast(image, tf.float32),
                mask,
                tf.stack([element_seed, tf.constant(0, tf.int64)]),
                crop_size,
                base_size=base_size,
                scale_range=scale_range,
                flip=flip,
                image_pad_value=image_pad_value,
                ignore_index=ignore_index,
            )

        ds = tf.data.Dataset.zip(ds, seeds).map(augment_pair, num_parallel_calls=num_parallel_calls)
    elif eval_size is not None:

        def resize_for_eval(image, mask):
            image, mask = resize_pair(tf.cast(image, tf.float32), mask, eval_size)
            image.set_shape([*eval_size, 3])
            mask.set_shape(eval_size)
            return image, mask

        ds = ds.map(resize_for_eval, num_parallel_calls=num_parallel_calls)
    elif eval_pad_size is not None:

        def pad_for_eval(image, mask):
            image, mask = pad_to_size(
                tf.cast(image, tf.float32),
                mask,
                eval_pad_size,
                image_pad_value=image_pad_value,
                ignore_index=ignore_index,
            )
            image = image[: eval_pad_size[0], : eval_pad_size[1]]
            mask = mask[: eval_pad_size[0], : eval_pad_size[1]]
            image.set_shape([*eval_pad_size, 3])
            mask.set_shape(eval_pad_size)
            return image, mask

        ds = ds.map(pad_for_eval, num_parallel_calls=num_parallel_calls)
    else:
        ds = ds.map(
            lambda image, mask: (tf.cast(image, tf.float32), mask),
            num_parallel_calls=num_parallel_calls,
        )

    if batch_size is not None:
        ds = ds.batch(
            int(batch_size), drop_remainder=drop_remainder, num_parallel_calls=num_parallel_calls
        )
    if prefetch:
        ds = ds.prefetch(prefetch)
    return ds
