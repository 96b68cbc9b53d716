"""Image/mask pairs from any folder layout, and the `tf.data` reader over them.

Two ways to say which files belong together:

- two folders, images and masks, matched by file stem
  (`images/0001.jpg` <-> `masks/0001.png`; an optional `mask_suffix` covers
  names like `0001_label.png`);
- a list file, one pair per line. A line of two paths (`img.png mask.png`,
  CamVid / SegNet style) is joined with `root`; known absolute prefixes of
  published lists (`/SegNet/CamVid/`) are stripped first. A line of one name
  (VOC `ImageSets` style, `2007_000032`) is a stem looked up in `images_dir`
  and `masks_dir`.
"""

import os

from keras_sanet.data.dataset_info import IGNORE_INDEX

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_EXTENSIONS = (".png",)
# Absolute prefixes baked into published list files; stripped so the rest joins with `root`.
KNOWN_LIST_PREFIXES = ("/SegNet/CamVid/",)

_MAX_NAMED = 5


def _named(items):
    items = sorted(items)
    shown = ", ".join(items[:_MAX_NAMED])
    if len(items) > _MAX_NAMED:
        shown += f" (and {len(items) - _MAX_NAMED} more)"
    return shown


def _require_dir(path, what):
    if path is None:
        raise ValueError(f"No {what} folder given; pass its path.")
    if not os.path.isdir(path):
        raise ValueError(f"The {what} folder {path!r} does not exist; check the path.")


def _files_by_stem(folder, extensions, what):
    extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    by_stem = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in extensions or not os.path.isfile(os.path.join(folder, name)):
            continue
        if stem in by_stem:
            raise ValueError(
                f"Two {what} files share the stem {stem!r} in {folder!r}: "
                f"{os.path.basename(by_stem[stem])} and {name}. Keep one of them so the "
                "image/mask match is unambiguous."
            )
        by_stem[stem] = os.path.join(folder, name)
    if not by_stem:
        raise ValueError(
            f"No {what} files found in {folder!r} (looked for extensions "
            f"{', '.join(extensions)}). Check the folder, or pass the right "
            f"`{'image' if what == 'image' else 'mask'}_extensions=`."
        )
    return by_stem, extensions


def _strip_prefix(path, strip_prefix):
    prefixes = ((strip_prefix,) if strip_prefix else ()) + KNOWN_LIST_PREFIXES
    for prefix in prefixes:
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def read_list_file(
    list_file,
    root=None,
    images_dir=None,
    masks_dir=None,
    strip_prefix=None,
    image_extensions=IMAGE_EXTENSIONS,
    mask_extensions=MASK_EXTENSIONS,
    mask_suffix="",
):
    """Reads a list file into `(image_path, mask_path)` pairs, in file order.

    Args:
        list_file: text file, one pair per line: `image mask` (two paths,
            joined with `root`) or a single stem (looked up in `images_dir`
            and `masks_dir`). Blank lines and lines starting with `#` are
            skipped.
        root: folder the two-path lines are relative to; defaults to the list
            file's folder. Known absolute prefixes (`/SegNet/CamVid/`) and
            `strip_prefix` are removed before joining.
        images_dir, masks_dir: folders for single-stem lines.
        strip_prefix: an extra leading string to remove from two-path lines.
        image_extensions, mask_extensions: tried in order for single-stem lines.
        mask_suffix: appended to the stem to name the mask of a single-stem line.

    Returns:
        A list of `(image_path, mask_path)` string tuples.

    Example:

    ```python
    pairs = read_list_file("camvid/train.txt")  # "/SegNet/CamVid/train/a.png ..."
    pairs[0]  # ("camvid/train/a.png", "camvid/trainannot/a.png")
    ```
    """
    if not os.path.isfile(list_file):
        raise ValueError(f"The list file {list_file!r} does not exist; check the path.")
    root = os.path.dirname(os.path.abspath(list_file)) if root is None else root
    with open(list_file, encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(
            f"The list file {list_file!r} has no lines (it is empty or only comments); "
            "write one `image mask` pair or one file stem per line."
        )
    pairs = []
    for number, line in lines:
        fields = line.split()
        if len(fields) == 2:
            image, mask = (os.path.join(root, _strip_prefix(p, strip_prefix)) for p in fields)
        elif len(fields) == 1:
            if images_dir is None or masks_dir is None:
                raise ValueError(
                    f"Line {number} of {list_file!r} is a single name ({line!r}); single-name "
                    "lists need `images_dir=` and `masks_dir=` to find the files."
                )
            image = _find_with_extension(images_dir, fields[0], image_extensions)
            mask = _find_with_extension(masks_dir, fields[0] + mask_suffix, mask_extensions)
            if image is None or mask is None:
                missing, folder, exts = (
                    (fields[0], images_dir, image_extensions)
                    if image is None
                    else (fields[0] + mask_suffix, masks_dir, mask_extensions)
                )
                raise ValueError(
                    f"Line {number} of {list_file!r} names {missing!r}, but no file "
                    f"{missing}{{{','.join(exts)}}} exists in {folder!r}. Fix the list or "
                    "the folder."
                )
        else:
            raise ValueError(
                f"Line {number} of {list_file!r} has {len(fields)} fields ({line!r}); write "
                "`image_path mask_path` or a single file stem per line."
            )
        for path, what in ((image, "image"), (mask, "mask")):
            if not os.path.isfile(path):
                raise ValueError(
                    f"Line {number} of {list_file!r} names the {what} {path!r}, which does not "
                    "exist. Pass `root=` (the folder the list's paths are relative to) or "
                    "`strip_prefix=` (a leading path to drop from every line)."
                )
        pairs.append((image, mask))
    return pairs


def _find_with_extension(folder, stem, extensions):
    for ext in extensions:
        path = os.path.join(folder, stem + ext)
        if os.path.isfile(path):
            return path
    return None


def folder_pairs(
    images_dir=None,
    masks_dir=None,
    list_file=None,
    root=None,
    strip_prefix=None,
    image_extensions=IMAGE_EXTENSIONS,
    mask_extensions=MASK_EXTENSIONS,
    mask_suffix="",
):
    """Lists the `(image_path, mask_path)` pairs of a folder layout.

    Without `list_file`, every image in `images_dir` must have exactly one
    mask in `masks_dir` with the same stem (plus `mask_suffix`) and the other
    way round; unmatched files raise a ValueError naming them. Pairs are
    sorted by stem. With `list_file`, see `read_list_file`.

    Args:
        images_dir: folder of RGB photos.
        masks_dir: folder of single-channel class-id masks (PNG).
        list_file: optional list of pairs or stems (see `read_list_file`).
        root: folder two-path list lines are relative to.
        strip_prefix: extra leading string to drop from two-path list lines.
        image_extensions: image file endings looked for (case-insensitive).
        mask_extensions: mask file endings looked for.
        mask_suffix: the mask's stem is the image's stem plus this suffix.

    Returns:
        A list of `(image_path, mask_path)` string tuples.

    Example:

    ```python
    pairs = folder_pairs("data/images", "data/masks")
    ```
    """
    if list_file is not None:
        return read_list_file(
            list_file,
            root=root,
            images_dir=images_dir,
            masks_dir=masks_dir,
            strip_prefix=strip_prefix,
            image_extensions=image_extensions,
            mask_extensions=mask_extensions,
            mask_suffix=mask_suffix,
        )
    _require_dir(images_dir, "images")
    _require_dir(masks_dir, "masks")
    images, _ = _files_by_stem(images_dir, image_extensions, "image")
    masks, _ = _files_by_stem(masks_dir, mask_extensions, "mask")
    masks_by_image_stem = {}
    for stem, path in masks.items():
        if mask_suffix and not stem.endswith(mask_suffix):
            continue
        masks_by_image_stem[stem[: len(stem) - len(mask_suffix)]] = path
    without_mask = [os.path.basename(images[s]) for s in images if s not in masks_by_image_stem]
    if without_mask:
        raise ValueError(
            f"{len(without_mask)} image(s) in {images_dir!r} have no mask in {masks_dir!r} "
            f"(expected the same stem{' + ' + repr(mask_suffix) if mask_suffix else ''}): "
            f"{_named(without_mask)}. Add the masks, remove the images, or pass a "
            "`list_file=` naming the pairs to use."
        )
    paired_masks = set(masks_by_image_stem.values())
    without_image = [os.path.basename(p) for p in masks.values() if p not in paired_masks]
    without_image += [
        os.path.basename(masks_by_image_stem[s]) for s in masks_by_image_stem if s not in images
    ]
    if without_image:
        raise ValueError(
            f"{len(without_image)} mask(s) in {masks_dir!r} have no image in {images_dir!r}: "
            f"{_named(without_image)}. Add the images, remove the masks, or pass a "
            "`list_file=` naming the pairs to use."
        )
    return [(images[s], masks_by_image_stem[s]) for s in sorted(images)]


def folder_dataset(
    images_dir=None,
    masks_dir=None,
    *,
    num_classes=None,
    dataset_info=None,
    label_map=None,
    list_file=None,
    root=None,
    strip_prefix=None,
    image_extensions=IMAGE_EXTENSIONS,
    mask_extensions=MASK_EXTENSIONS,
    mask_suffix="",
    ignore_index=IGNORE_INDEX,
    **pipeline_kwargs,
):
    """A `tf.data.Dataset` of `(image, mask)` from a folder of image/mask pairs.

    Elements are `image` float32 `(H, W, 3)` RGB in 0..255 and `mask` uint8
    `(H, W)` with class ids `0..num_classes-1` and `ignore_index`, batched
    when `batch_size` is given. The pairs are scanned once (labels, sizes,
    formats) before the dataset is built; see `validate_pairs`.

    Args:
        images_dir, masks_dir, list_file, root, strip_prefix,
            image_extensions, mask_extensions, mask_suffix: which files, see
            `folder_pairs`.
        num_classes: number of classes; required unless `dataset_info` is
            given (then it must agree with it).
        dataset_info: a `DatasetInfo`; supplies `num_classes`, the
            `ignore_index` and the default `label_map`.
        label_map: `{raw_id: training_id}` applied to the masks, e.g.
            `{11: 255}`; defaults to `dataset_info.label_map` (or none).
        ignore_index: the mask value losses skip (255).
        **pipeline_kwargs: `augment`, `crop_size`, `base_size`, `scale_range`,
            `flip`, `image_pad_value`, `eval_size`, `shuffle`, `seed`,
            `repeat`, `batch_size`, `drop_remainder`, `num_parallel_calls`,
            `prefetch`, `cache`, `validate`, `progress`; see
            `segmentation_dataset`.

    Returns:
        A `tf.data.Dataset`. `folder_pairs(...)` with the same file arguments
        gives the list of pairs behind it.

    Example:

    ```python
    ds = folder_dataset("data/images", "data/masks", num_classes=3,
                        augment=True, crop_size=256, shuffle=True, seed=0,
                        batch_size=8)
    images, masks = next(iter(ds))  # (8, 256, 256, 3) float32, (8, 256, 256) uint8
    ```
    """
    from keras_sanet.data.pipeline import segmentation_dataset

    pairs = folder_pairs(
        images_dir,
        masks_dir,
        list_file=list_file,
        root=root,
        strip_prefix=strip_prefix,
        image_extensions=image_extensions,
        mask_extensions=mask_extensions,
        mask_suffix=mask_suffix,
    )
    return segmentation_dataset(
        pairs,
        num_classes=num_classes,
        dataset_info=dataset_info,
        label_map=label_map,
        ignore_index=ignore_index,
        **pipeline_kwargs,
    )
