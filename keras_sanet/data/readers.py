"""The named datasets with a reader: one name -> pairs, `tf.data` pipeline and `DatasetInfo`.

The training config (`[data] dataset = ...`), `keras-sanet eval --dataset`
and the ablation command all go through these names:

| name | reader | classes |
| --- | --- | --- |
| `camvid` | `camvid_dataset(root, split)` | 11 |
| `voc` | `voc_dataset(root, split)` | 21 |
| `voc_aug` | `voc_dataset(root, split, augmented=True)` | 21 |
| `context59` | `context_dataset(root, split, num_classes=59)` | 59 |
| `context60` | `context_dataset(root, split, num_classes=60)` | 60 |
"""

import functools

from keras_sanet.data.camvid import camvid_dataset
from keras_sanet.data.camvid import camvid_pairs
from keras_sanet.data.dataset_info import CAMVID_INFO
from keras_sanet.data.dataset_info import CONTEXT59_INFO
from keras_sanet.data.dataset_info import CONTEXT60_INFO
from keras_sanet.data.dataset_info import VOC_AUG_INFO
from keras_sanet.data.dataset_info import VOC_INFO
from keras_sanet.data.pascal import context_dataset
from keras_sanet.data.pascal import context_pairs
from keras_sanet.data.pascal import voc_dataset
from keras_sanet.data.pascal import voc_pairs

# name -> (pairs(root, split), dataset(root, split, **kwargs), DatasetInfo)
_READERS = {
    "camvid": (camvid_pairs, camvid_dataset, CAMVID_INFO),
    "voc": (
        functools.partial(voc_pairs, augmented=False),
        functools.partial(voc_dataset, augmented=False),
        VOC_INFO,
    ),
    "voc_aug": (
        functools.partial(voc_pairs, augmented=True),
        functools.partial(voc_dataset, augmented=True),
        VOC_AUG_INFO,
    ),
    "context59": (
        context_pairs,
        functools.partial(context_dataset, num_classes=59),
        CONTEXT59_INFO,
    ),
    "context60": (
        context_pairs,
        functools.partial(context_dataset, num_classes=60),
        CONTEXT60_INFO,
    ),
}

NAMED_DATASETS = tuple(_READERS)


def _reader(name):
    if name not in _READERS:
        raise ValueError(
            f"No reader for dataset {name!r}. Named datasets: {', '.join(NAMED_DATASETS)}; "
            "for any other folder of image/mask pairs use folder_dataset (dataset = "
            "\"folder\" in a training config)."
        )
    return _READERS[name]


def named_dataset_info(name):
    """The `DatasetInfo` (classes, palette, label map) the reader of `name` yields."""
    return _reader(name)[2]


def named_pairs(name, root, split):
    """`(image_path, mask_path)` pairs of `split` of the named dataset at `root`.

    Example:
    >>> len(named_pairs("context59", "data/VOCdevkit/VOC2010", "val"))
    5105
    """
    return _reader(name)[0](root, split)


def named_dataset(name, root, split, **kwargs):
    """The `tf.data.Dataset` of `split` of the named dataset at `root`.

    Args:
        name: one of `NAMED_DATASETS`.
        root: the dataset's folder (see each reader).
        split: a split of the dataset (`named_dataset_info(name).splits`).
        **kwargs: the reader's options (`augment`, `crop_size`, `batch_size`, ...).

    Example:

    ```python
    val = named_dataset("context59", "data/VOCdevkit/VOC2010", "val", batch_size=1)
    ```
    """
    return _reader(name)[1](root, split, **kwargs)
