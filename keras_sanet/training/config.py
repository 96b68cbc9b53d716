"""The training configuration: a small TOML file with [data], [model] and [train]."""

import dataclasses
import os
import tomllib


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it is augmented.

    Args:
        dataset: `"camvid"` or `"folder"` (any folder of image/mask pairs).
        root: CamVid folder (with `train/`, `trainannot/`, ...).
        train_images, train_masks, val_images, val_masks: folders, with
            `dataset = "folder"`.
        num_classes: classes of a `"folder"` dataset (CamVid knows its 11).
        label_map: `{raw_id: training_id}` for a `"folder"` dataset, e.g.
            `{"0": 255}` to ignore a background id (TOML keys are strings).
        crop_size: `[height, width]` of the training crops.
        base_size: long side at scale 1 (0 = each image's own size).
        scale_range: random scale range of the augmentation.
        flip: random horizontal flip.
        val_batch_size: batch of the validation pass (at least the replica
            count when distributed; batches are padded with ignored pixels).
    """

    dataset: str = "camvid"
    root: str = "../shared/data/camvid"
    train_images: str = ""
    train_masks: str = ""
    val_images: str = ""
    val_masks: str = ""
    num_classes: int = 0
    label_map: dict = dataclasses.field(default_factory=dict)
    crop_size: list = dataclasses.field(default_factory=lambda: [360, 480])
    base_size: int = 0
    scale_range: list = dataclasses.field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    val_batch_size: int = 1


@dataclasses.dataclass
class ModelConfig:
    """The `keras_sanet.SANet` arguments (see its docstring)."""

    backbone: str = "resnet18"
    output_stride: int = 16
    backbone_weights: str = ""
    attention: str = "sa"
    categorical_head: bool = True
    auxiliary_head: bool = True
    se_mode: str = "gate"
    alpha: float = 0.2
    beta: float = 0.8
    dtype: str = ""
    backbone_kwargs: dict = dataclasses.field(default_factory=dict)
    head_kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainConfig:
    """The optimisation recipe and where results go.

    Args:
        batch_size: global batch (split across replicas when distributed).
        epochs: epochs of the whole run (a resumed run stops at the same one).
        steps_per_epoch: 0 = one pass over the training split.
        learning_rate: base LR; poly decay (power `poly_power`) per step.
        head_lr_multiplier: the heads' LR multiplier (PyTorch-Encoding: 10).
        distribution: `"none"`, `"mirrored"` (TensorFlow MirroredStrategy,
            synchronized batch norm) or `"data_parallel"` (JAX
            `keras.distribution.DataParallel`).
        jit_compile: `"auto"`, `true` or `false` (passed to `compile`).
        output_dir: checkpoints, CSV log, final model.
        validate_every: run validation every N epochs.
        exact_resume: a resumed run skips the batches the interrupted run
            consumed, so it sees the data an uninterrupted run would (it
            reads them once more to get there); `false` restarts the data
            stream (quicker start, same epochs and learning-rate schedule).
    """

    batch_size: int = 8
    epochs: int = 40
    steps_per_epoch: int = 0
    learning_rate: float = 0.01
    head_lr_multiplier: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    seed: int = 0
    distribution: str = "none"
    jit_compile: object = "auto"
    output_dir: str = "runs/sanet"
    validate_every: int = 1
    exact_resume: bool = True


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
DISTRIBUTIONS = ("none", "mirrored", "data_parallel")


def _parse_value(text):
    """Parses a `--set` value as TOML (numbers, booleans, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def config_from_dict(raw, source="the config"):
    """Builds a `Config`, naming unknown sections or keys and how to fix them."""
    sections = {}
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ValueError(
                f"{source}: unknown section [{section}]. Use [data], [model] and [train]."
            )
        if not isinstance(values, dict):
            raise ValueError(
                f"{source}: [{section}] must be a table of key = value lines, got {values!r}."
            )
        cls = _SECTIONS[section]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {unknown} in [{section}]. Valid keys: "
                f"{sorted(known)}."
            )
        sections[section] = cls(**values)
    config = Config(**sections)
    validate_config(config, source)
    return config


def _check_types(config, source):
    """Every value has the type of its default (an int is fine where a float is)."""
    for section in _SECTIONS:
        values = getattr(config, section)
        for field in dataclasses.fields(values):
            if field.name == "jit_compile":
                continue
            default = getattr(type(values)(), field.name)
            value = getattr(values, field.name)
            expected = (int, float) if type(default) is float else type(default)
            if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
                value, expected
            ):
                raise ValueError(
                    f"{source}: {section}.{field.name} = {value!r} must be of type "
                    f"{type(default).__name__} (like the default, {default!r})."
                )


def validate_config(config, source="the config"):
    """Raises a ValueError naming the first invalid value of `config` and its fix."""
    _check_types(config, source)
    d, t = config.data, config.train
    if t.distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"{source}: train.distribution={t.distribution!r}; use one of {DISTRIBUTIONS}."
        )
    if t.jit_compile not in ("auto", True, False):
        raise ValueError(
            f"{source}: train.jit_compile={t.jit_compile!r}; use \"auto\", true or false."
        )
    for name in ("batch_size", "epochs", "validate_every"):
        if getattr(t, name) < 1:
            raise ValueError(f"{source}: train.{name} must be >= 1, got {getattr(t, name)}.")
    if t.steps_per_epoch < 0:
        raise ValueError(
            f"{source}: train.steps_per_epoch must be >= 0 (0 = one pass over the training "
            f"split), got {t.steps_per_epoch}."
        )
    if not t.learning_rate > 0 or not t.head_lr_multiplier > 0:
        raise ValueError(
            f"{source}: train.learning_rate and train.head_lr_multiplier must be > 0, got "
            f"{t.learning_rate} and {t.head_lr_multiplier}."
        )
    if d.dataset not in ("camvid", "folder"):
        raise ValueError(f"{source}: data.dataset={d.dataset!r}; use 'camvid' or 'folder'.")
    if d.dataset == "folder":
        if d.num_classes < 1:
            raise ValueError(
                f"{source}: a 'folder' dataset needs data.num_classes (the number of classes)."
            )
        if not d.train_images or not d.train_masks:
            raise ValueError(
                f"{source}: a 'folder' dataset needs data.train_images and data.train_masks "
                "(the folders of training images and masks)."
            )
        if bool(d.val_images) != bool(d.val_masks):
            raise ValueError(
                f"{source}: set both data.val_images and data.val_masks, or neither (no "
                "validation)."
            )
    if len(d.crop_size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in d.crop_size
    ):
        raise ValueError(
            f"{source}: data.crop_size must be [height, width] in pixels, got {d.crop_size}."
        )


def load_config(path, overrides=()):
    """Reads a TOML config and applies `section.key=value` overrides.

    Args:
        path: the TOML file.
        overrides: strings like `"train.epochs=2"` (values parsed as TOML).

    Returns:
        A validated `Config`.

    Example:
    >>> config = load_config("configs/camvid_resnet18.toml", ["train.epochs=1"])
    """
    if not os.path.isfile(path):
        raise ValueError(f"Config file {path!r} not found. Pass the path of a TOML file.")
    with open(path, "rb") as f:
        try:
            raw = tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from error
    for override in overrides:
        key, sep, value = override.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(
                f"Override {override!r} must look like section.key=value, e.g. train.epochs=2."
            )
        raw.setdefault(section, {})[name] = _parse_value(value.strip())
    return config_from_dict(raw, source=path)
