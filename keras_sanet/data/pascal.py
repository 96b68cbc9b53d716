"""PASCAL VOC 2012 (plain and SBD-augmented) and PASCAL Context: pairs and `tf.data` readers.

The layouts are the ones the public downloads and the common conversion
scripts produce; `root` may be the year folder (`VOCdevkit/VOC2012`), the
`VOCdevkit` folder, or the folder holding `VOCdevkit`.

PASCAL VOC 2012 (`voc_dataset`, 21 classes, 255 ignored)::

    VOCdevkit/VOC2012/
      JPEGImages/2007_000032.jpg ...
      SegmentationClass/2007_000032.png ...     palette ("P") PNGs: the pixel
                                                 values are class ids 0..20, 255 border
      ImageSets/Segmentation/train.txt  val.txt  trainval.txt   (one stem per line)

SBD-augmented VOC (`voc_dataset(..., augmented=True)`, dataset name
`voc_aug`): the same tree plus

      SegmentationClassAug/*.png                 single-channel ("L") id PNGs
      ImageSets/Segmentation/trainaug.txt        optional list of the 10,582 images

`SegmentationClassAug` is what mmsegmentation's `voc_aug.py` writes from
SBD's `.mat` files (SBD train + val, 11,355 images), or the widely shared
`SegmentationClassAug.zip` (12,031 images: train_aug and val). The training
list is the first of `ImageSets/Segmentation/trainaug.txt` (mmsegmentation),
`ImageSets/SegmentationAug/train_aug.txt` or
`ImageSets/Segmentation/train_aug.txt` (DeepLab style: stems, or lines
`/JPEGImages/X.jpg /SegmentationClassAug/X.png`) that exists; without any,
it is (the stems of `SegmentationClassAug` + VOC `train.txt`) - VOC
`val.txt`, which is mmsegmentation's definition and gives 10,582 images on
the full data. A stem's mask is VOC's own `SegmentationClass/X.png` when the
stem is in VOC `train.txt` and that file exists (the finer annotation, with
its 255 border), else `SegmentationClassAug/X.png`. `val` is always VOC's
1,449 `val.txt` images with their `SegmentationClass` masks.

PASCAL Context (`context_dataset`, 59 or 60 classes), as mmsegmentation's
`tools/dataset_converters/pascal_context.py` converts the Detail API labels::

    VOCdevkit/VOC2010/
      JPEGImages/2008_000002.jpg ...
      SegmentationClassContext/2008_000002.png   "L" PNGs, values 0..59, 0 = background
      ImageSets/SegmentationContext/train.txt  val.txt   (4,998 and 5,105 stems)

Context-60 reads the values as they are (background = class 0); Context-59
ignores background (0 -> 255) and shifts the rest down (k -> k - 1), exactly
PyTorch-Encoding's `target - 1` and mmsegmentation's `reduce_zero_label`.
Masks converted otherwise (e.g. 0..58 with background already 255) need
`label_map={}` with `num_classes=59`.

TensorFlow Datasets does not serve these: its `voc/2012` builder carries
boxes and image labels but no segmentation masks, and it has no builder for
SBD or PASCAL Context, so the folders are read directly (no TFDS
preparation step). Every reader scans its pairs once (see `validate_pairs`);
a missing folder, list or file stops with an error naming it and where to
get it.
"""

import os

from keras_sanet.data.dataset_info import CONTEXT59_INFO
from keras_sanet.data.dataset_info import CONTEXT60_INFO
from keras_sanet.data.dataset_info import VOC_AUG_INFO
from keras_sanet.data.dataset_info import VOC_INFO

# PyTorch-Encoding's PASCAL recipe: random crops of 480 around a long side of 520.
DEFAULT_PASCAL_CROP_SIZE = (480, 480)
DEFAULT_PASCAL_BASE_SIZE = 520

VOC_AUG_TRAIN_COUNT = 10582
_MAX_NAMED = 5

VOC_HINT = (
    "Get PASCAL VOC 2012 from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ "
    "(VOCtrainval_11-May-2012.tar, which unpacks to VOCdevkit/VOC2012/ with JPEGImages/, "
    "SegmentationClass/ and ImageSets/Segmentation/) and pass VOCdevkit/VOC2012 as root."
)
SBD_HINT = (
    "The augmented set comes from SBD (http://home.bharathh.info/pubs/codes/SBD/download.html, "
    "benchmark.tgz): convert its dataset/cls/*.mat files with mmsegmentation's "
    "tools/dataset_converters/voc_aug.py VOCdevkit VOCdevkit/VOCaug, which writes "
    "VOC2012/SegmentationClassAug/ and ImageSets/Segmentation/trainaug.txt; or unpack the "
    "widely shared SegmentationClassAug.zip (DeepLab's train_aug labels) into VOCdevkit/VOC2012/."
)
CONTEXT_HINT = (
    "PASCAL Context needs the VOC 2010 images and the converted Context labels: get "
    "VOCtrainval_03-May-2010.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2010/), "
    "trainval_merged.json (https://codalabuser.blob.core.windows.net/public/"
    "trainval_merged.json, see https://cs.stanford.edu/~roozbeh/pascal-context/), install the "
    "Detail API (https://github.com/zhanghang1989/detail-api, folder PythonAPI) and run "
    "mmsegmentation's tools/dataset_converters/pascal_context.py VOCdevkit "
    "VOCdevkit/VOC2010/trainval_merged.json, which writes VOC2010/SegmentationClassContext/ "
    "and VOC2010/ImageSets/SegmentationContext/{train,val}.txt. Pass VOCdevkit/VOC2010 as root."
)

VOC_AUG_LISTS = (
    os.path.join("ImageSets", "Segmentation", "trainaug.txt"),
    os.path.join("ImageSets", "SegmentationAug", "train_aug.txt"),
    os.path.join("ImageSets", "Segmentation", "train_aug.txt"),
)


def _named(items):
    items = list(items)
    shown = ", ".join(items[:_MAX_NAMED])
    if len(items) > _MAX_NAMED:
        shown += f" (and {len(items) - _MAX_NAMED} more)"
    return shown


def find_year_dir(root, year, markers, what, hint):
    """The `VOCdevkit/<year>` folder of `root` (itself, `root/<year>` or `root/VOCdevkit/<year>`).

    Args:
        root: the folder the user passed.
        year: `"VOC2012"` or `"VOC2010"`.
        markers: sub-folders whose presence marks the year folder.
        what: the dataset's name, for messages.
        hint: where to get the data, appended to errors.

    Returns:
        The year folder's path.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"The {what} folder {root!r} does not exist. {hint}")
    candidates = (root, os.path.join(root, year), os.path.join(root, "VOCdevkit", year))
    for candidate in candidates:
        if any(os.path.isdir(os.path.join(candidate, marker)) for marker in markers):
            return candidate
    raise ValueError(
        f"{root!r} is not a {what} folder: none of {', '.join(repr(c) for c in candidates)} "
        f"holds {' or '.join(m + '/' for m in markers)}. Pass VOCdevkit/{year} (or the "
        f"folder holding VOCdevkit/) as root. {hint}"
    )


def _require_dir(year_dir, name, what, hint):
    path = os.path.join(year_dir, name)
    if not os.path.isdir(path):
        raise ValueError(
            f"The {what} folder {year_dir!r} has no {name}/ ({path!r} is missing). {hint}"
        )
    return path


def _require_list(year_dir, relative, what, split, hint):
    path = os.path.join(year_dir, relative)
    if not os.path.isfile(path):
        raise ValueError(
            f"The {what} split {split!r} needs the list {relative} in {year_dir!r}, which is "
            f"missing ({path!r}). {hint}"
        )
    return path


def read_stem_list(path):
    """`[(stem, image_rel or None, mask_rel or None)]` of an ImageSets-style list.

    A line is a stem (`2007_000032`) or two paths relative to the year folder
    (`/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png`,
    DeepLab's `train_aug.txt`). Blank lines and `#` comments are skipped.
    """
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) == 1:
                entries.append((os.path.splitext(os.path.basename(fields[0]))[0], None, None))
            elif len(fields) == 2:
                image, mask = (field.lstrip("/") for field in fields)
                entries.append((os.path.splitext(os.path.basename(image))[0], image, mask))
            else:
                raise ValueError(
                    f"Line {number} of {path!r} has {len(fields)} fields ({line.strip()!r}); "
                    "write one image stem (2007_000032) or `/JPEGImages/X.jpg "
                    "/SegmentationClassAug/X.png` per line."
                )
    if not entries:
        raise ValueError(
            f"The list {path!r} has no entries (empty or only comments); restore it from the "
            "dataset's download."
        )
    return entries


def _stems(path):
    return [stem for stem, _, _ in read_stem_list(path)]


def _check_exist(pairs, year_dir, list_name, what, hint):
    """Raises naming the missing images/masks (folder, count, first names) and the fix."""
    for index, kind in ((0, "image"), (1, "mask")):
        missing = [path for path in (pair[index] for pair in pairs) if not os.path.isfile(path)]
        if missing:
            folders = sorted({os.path.relpath(os.path.dirname(p), year_dir) for p in missing})
            raise ValueError(
                f"{len(missing)} of the {len(pairs)} {kind}s that {list_name} lists are missing "
                f"from {', '.join(f + '/' for f in folders)} in {year_dir!r}: "
                f"{_named(os.path.basename(p) for p in missing)}. The {what} tree is "
                f"incomplete (an interrupted download or conversion?). {hint}"
            )
    return pairs


def _voc_split_pairs(year_dir, split, hint):
    images_dir = _require_dir(year_dir, "JPEGImages", "PASCAL VOC", hint)
    masks_dir = _require_dir(year_dir, "SegmentationClass", "PASCAL VOC", hint)
    relative = os.path.join("ImageSets", "Segmentation", f"{split}.txt")
    list_path = _require_list(year_dir, relative, "PASCAL VOC", split, hint)
    pairs = [
        (os.path.join(images_dir, stem + ".jpg"), os.path.join(masks_dir, stem + ".png"))
        for stem in _stems(list_path)
    ]
    return _check_exist(pairs, year_dir, relative, "PASCAL VOC", hint)


def _voc_aug_train_pairs(year_dir):
    hint = f"{SBD_HINT} {VOC_HINT}"
    images_dir = _require_dir(year_dir, "JPEGImages", "PASCAL VOC", hint)
    aug_dir = _require_dir(year_dir, "SegmentationClassAug", "PASCAL VOC", SBD_HINT)
    class_dir = os.path.join(year_dir, "SegmentationClass")
    voc_train = set()
    train_list = os.path.join(year_dir, "ImageSets", "Segmentation", "train.txt")
    if os.path.isfile(train_list):
        voc_train = set(_stems(train_list))

    def mask_of(stem):
        own = os.path.join(class_dir, stem + ".png")
        if stem in voc_train and os.path.isfile(own):
            return own
        return os.path.join(aug_dir, stem + ".png")

    for relative in VOC_AUG_LISTS:
        list_path = os.path.join(year_dir, relative)
        if os.path.isfile(list_path):
            pairs = []
            for stem, image, mask in read_stem_list(list_path):
                if image is None:
                    pairs.append((os.path.join(images_dir, stem + ".jpg"), mask_of(stem)))
                else:
                    pairs.append((os.path.join(year_dir, image), os.path.join(year_dir, mask)))
            return _check_exist(pairs, year_dir, relative, "SBD-augmented VOC", hint)

    # No list: mmsegmentation's definition, (SBD + VOC train) - VOC val.
    val_relative = os.path.join("ImageSets", "Segmentation", "val.txt")
    val_list = _require_list(
        year_dir,
        val_relative,
        "SBD-augmented VOC",
        "train",
        f"Without {' or '.join(VOC_AUG_LISTS)} the training list is (SegmentationClassAug + "
        f"VOC train) - VOC val, which needs VOC's val.txt. {hint}",
    )
    val = set(_stems(val_list))
    aug_stems = {
        os.path.splitext(name)[0] for name in os.listdir(aug_dir) if name.endswith(".png")
    }
    stems = sorted((aug_stems | voc_train) - val)
    if not stems:
        raise ValueError(
            f"{aug_dir!r} holds no PNG masks outside VOC val, so the augmented training set is "
            f"empty. {SBD_HINT}"
        )
    pairs = [(os.path.join(images_dir, stem + ".jpg"), mask_of(stem)) for stem in stems]
    return _check_exist(
        pairs, year_dir, "SegmentationClassAug/ + VOC train.txt", "SBD-augmented VOC", hint
    )


def voc_pairs(root, split="train", augmented=False):
    """Lists PASCAL VOC 2012's `(image_path, mask_path)` pairs of `split`, in list order.

    Args:
        root: `VOCdevkit/VOC2012`, `VOCdevkit`, or the folder holding it.
        split: `"train"` (1,464; 10,582 with `augmented`), `"val"` (1,449) or
            `"trainval"` (2,913; 12,031 with `augmented`). The test split's
            masks are not public: score it on the evaluation server.
        augmented: read the SBD-augmented training set (`voc_aug`); see the
            module docstring for where its list and masks come from.

    Returns:
        A list of `(image_path, mask_path)` string tuples.

    Example:

    ```python
    pairs = voc_pairs("data/VOCdevkit/VOC2012", "train", augmented=True)
    len(pairs)  # 10582
    ```
    """
    info = VOC_AUG_INFO if augmented else VOC_INFO
    if split not in info.splits:
        test = " The test masks are not public; submit test predictions to the server." if (
            split == "test"
        ) else ""
        raise ValueError(
            f"Unknown PASCAL VOC split {split!r}. Valid splits: {', '.join(info.splits)}.{test}"
        )
    hint = VOC_HINT
    if augmented and split != "val":
        hint = f"{SBD_HINT} {VOC_HINT}"
    markers = ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets")
    year_dir = find_year_dir(root, "VOC2012", markers, "PASCAL VOC 2012", hint)
    if not augmented or split == "val":
        return _voc_split_pairs(year_dir, split, VOC_HINT)
    train = _voc_aug_train_pairs(year_dir)
    if split == "train":
        return train
    seen = {os.path.basename(image) for image, _ in train}
    val = _voc_split_pairs(year_dir, "val", VOC_HINT)
    return train + [pair for pair in val if os.path.basename(pair[0]) not in seen]


def context_pairs(root, split="train"):
    """Lists PASCAL Context's `(image_path, mask_path)` pairs of `split`, in list order.

    The same pairs serve Context-59 and Context-60; they differ in how the
    mask values are read (see `context_dataset`).

    Args:
        root: `VOCdevkit/VOC2010`, `VOCdevkit`, or the folder holding it,
            with the converted labels (module docstring).
        split: `"train"` (4,998 images) or `"val"` (5,105; the paper's test set).

    Returns:
        A list of `(image_path, mask_path)` string tuples.

    Example:

    ```python
    pairs = context_pairs("data/VOCdevkit/VOC2010", "val")
    len(pairs)  # 5105
    ```
    """
    if split not in CONTEXT59_INFO.splits:
        raise ValueError(
            f"Unknown PASCAL Context split {split!r}. Valid splits: "
            f"{', '.join(CONTEXT59_INFO.splits)}."
        )
    markers = ("JPEGImages", "SegmentationClassContext", "ImageSets")
    year_dir = find_year_dir(root, "VOC2010", markers, "PASCAL Context", CONTEXT_HINT)
    images_dir = _require_dir(year_dir, "JPEGImages", "PASCAL Context", CONTEXT_HINT)
    masks_dir = _require_dir(year_dir, "SegmentationClassContext", "PASCAL Context", CONTEXT_HINT)
    relative = os.path.join("ImageSets", "SegmentationContext", f"{split}.txt")
    list_path = _require_list(year_dir, relative, "PASCAL Context", split, CONTEXT_HINT)
    pairs = [
        (os.path.join(images_dir, stem + ".jpg"), os.path.join(masks_dir, stem + ".png"))
        for stem in _stems(list_path)
    ]
    return _check_exist(pairs, year_dir, relative, "PASCAL Context", CONTEXT_HINT)


def _pascal_dataset(pairs, info, split, augment, shuffle, crop_size, base_size, pipeline_kwargs):
    from keras_sanet.data.pipeline import segmentation_dataset

    is_train = split in ("train", "trainval")
    return segmentation_dataset(
        pairs,
        dataset_info=info,
        augment=is_train if augment is None else augment,
        shuffle=is_train if shuffle is None else shuffle,
        crop_size=crop_size,
        base_size=base_size,
        **pipeline_kwargs,
    )


def voc_dataset(
    root,
    split="train",
    *,
    augmented=False,
    num_classes=None,
    augment=None,
    shuffle=None,
    crop_size=DEFAULT_PASCAL_CROP_SIZE,
    base_size=DEFAULT_PASCAL_BASE_SIZE,
    mask_decoder="pillow",
    **pipeline_kwargs,
):
    """A `tf.data.Dataset` of PASCAL VOC 2012 `(image, mask)` pairs, 21 classes.

    Elements are `image` float32 `(H, W, 3)` RGB in 0..255 and `mask` uint8
    `(H, W)` with ids 0..20 (0 = background) and 255 (object borders,
    ignored); `crop_size` with `augment`. `SegmentationClass` PNGs are
    palette images: their pixel values (palette indices) are read, never
    their colours.

    Args:
        root: see `voc_pairs`.
        split: `"train"`, `"val"` or `"trainval"`.
        augmented: the SBD-augmented training set (10,582 images).
        num_classes: leave it out, or 21.
        augment: training augmentation; default on for the training splits.
        shuffle: default on for the training splits.
        crop_size: crop of the augmentation (480, the paper's).
        base_size: long side at scale 1 of the augmentation (520, PyTorch-Encoding).
        mask_decoder: `"pillow"` (reads palette indices; the default) or
            `"auto"`.
        **pipeline_kwargs: `label_map`, `scale_range`, `flip`,
            `image_pad_value`, `eval_size`, `eval_pad_size`, `seed`,
            `repeat`, `batch_size`, `drop_remainder`, `num_parallel_calls`,
            `prefetch`, `cache`, `validate`, `progress`; see
            `segmentation_dataset`.

    Returns:
        A `tf.data.Dataset`.

    Example:

    ```python
    train = voc_dataset("data/VOCdevkit/VOC2012", "train", augmented=True,
                        batch_size=16, seed=0, repeat=True)
    val = voc_dataset("data/VOCdevkit/VOC2012", "val", batch_size=1)
    ```
    """
    info = VOC_AUG_INFO if augmented else VOC_INFO
    if num_classes is not None and num_classes != info.num_classes:
        raise ValueError(
            f"num_classes={num_classes} does not match PASCAL VOC, which has 21 classes "
            "(background and 20 objects; 255 marks ignored borders). Leave num_classes out."
        )
    pairs = voc_pairs(root, split, augmented=augmented)
    pipeline_kwargs["mask_decoder"] = mask_decoder
    return _pascal_dataset(
        pairs, info, split, augment, shuffle, crop_size, base_size, pipeline_kwargs
    )


def context_dataset(
    root,
    split="train",
    *,
    num_classes=59,
    augment=None,
    shuffle=None,
    crop_size=DEFAULT_PASCAL_CROP_SIZE,
    base_size=DEFAULT_PASCAL_BASE_SIZE,
    **pipeline_kwargs,
):
    """A `tf.data.Dataset` of PASCAL Context `(image, mask)` pairs, 59 or 60 classes.

    Elements are `image` float32 `(H, W, 3)` RGB in 0..255 and `mask` uint8
    `(H, W)`. With `num_classes=59` (the paper's main setting) background is
    ignored: ids 0..58 are `CONTEXT59_INFO.class_names` (aeroplane ...
    wood) and background pixels are 255. With `num_classes=60` background is
    class 0 and counts in every score.

    Args:
        root: see `context_pairs`.
        split: `"train"` or `"val"`.
        num_classes: 59 or 60.
        augment: training augmentation; default on for `"train"`.
        shuffle: default on for `"train"`.
        crop_size: crop of the augmentation (480, the paper's).
        base_size: long side at scale 1 of the augmentation (520).
        **pipeline_kwargs: `label_map` (replaces the 59-class remapping),
            `scale_range`, `flip`, `image_pad_value`, `eval_size`,
            `eval_pad_size`, `seed`, `repeat`, `batch_size`,
            `drop_remainder`, `num_parallel_calls`, `prefetch`, `cache`,
            `validate`, `progress`, `mask_decoder`; see `segmentation_dataset`.

    Returns:
        A `tf.data.Dataset`.

    Example:

    ```python
    train = context_dataset("data/VOCdevkit/VOC2010", "train", num_classes=59,
                            batch_size=16, seed=0, repeat=True)
    ```
    """
    infos = {59: CONTEXT59_INFO, 60: CONTEXT60_INFO}
    if num_classes not in infos:
        raise ValueError(
            f"num_classes={num_classes!r}: PASCAL Context is read with 59 classes (background "
            "ignored, the paper's main setting) or 60 (background counted, Table 3). Pass "
            "num_classes=59 or num_classes=60."
        )
    pairs = context_pairs(root, split)
    return _pascal_dataset(
        pairs, infos[num_classes], split, augment, shuffle, crop_size, base_size, pipeline_kwargs
    )
