"""The training configuration: a TOML file with [data], [model], [train], [eval] and [paper].

`[data]`, `[model]` and `[train]` say what is trained and how; `[eval]` is
the test protocol `keras-sanet eval --run-dir` (and the ablation command)
uses for the run by default; `[paper]` records which figure of the paper
the run aims at (informational, shown next to our scores).
"""

import dataclasses
import os
import tomllib


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it is augmented.

    Args:
        dataset: a named dataset, `"camvid"`, `"voc"`, `"voc_aug"`,
            `"context59"` or `"context60"` (see `keras_sanet.data.readers`),
            or `"folder"` (any folder of image/mask pairs).
        root: the named dataset's folder: CamVid's (with `train/`,
            `trainannot/`, ...), `VOCdevkit/VOC2012` (voc, voc_aug) or
            `VOCdevkit/VOC2010` (context59, context60).
        train_split, val_split: splits of a named dataset to train on and to
            validate on during training (`val_split = ""`: no validation).
        train_images, train_masks, val_images, val_masks: folders, with
            `dataset = "folder"`.
        num_classes: classes of a `"folder"` dataset (named datasets know
            theirs; leave it 0).
        label_map: `{raw_id: training_id}` for a `"folder"` dataset, e.g.
            `{"0": 255}` to ignore a background id (TOML keys are strings).
        crop_size: `[height, width]` of the training crops.
        base_size: long side at scale 1 (0 = each image's own size).
        scale_range: random scale range of the augmentation.
        flip: random horizontal flip.
        val_batch_size: batch of the validation pass (at least the replica
            count when distributed; batches are padded with ignored pixels).
        val_pad_size: `[height, width]`: pad every validation pair to this
            size (ignored pixels), so images of different sizes batch and
            compile as one shape (PASCAL: `[512, 512]`, its images are at
            most 500x500); `[]` = validate at the native size.
    """

    dataset: str = "camvid"
    root: str = "../shared/data/camvid"
    train_split: str = "train"
    val_split: str = "val"
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
    val_pad_size: list = dataclasses.field(default_factory=list)


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
        reference_batch_size: the global batch `learning_rate` is meant for;
            the run then uses `learning_rate * batch_size /
            reference_batch_size` (the paper: 0.001 at batch 16 on Context,
            scaled linearly with the batch). 0 = use `learning_rate` as is.
        head_lr_multiplier: the heads' LR multiplier (PyTorch-Encoding: 10).
        distribution: `"none"`, `"mirrored"` (TensorFlow MirroredStrategy,
            synchronized batch norm), `"data_parallel"` (JAX
            `keras.distribution.DataParallel`) or `"auto"` (mirrored on
            TensorFlow and data_parallel on JAX when several GPUs/TPUs are
            visible, else none).
        jit_compile: `"auto"`, `true` or `false` (passed to `compile`).
        output_dir: checkpoints, CSV log, final model.
        validate_every: run validation every N epochs.
        exact_resume: a resumed run skips the batches the interrupted run
            consumed, so it sees the data an uninterrupted run would (it
            reads them once more to get there); `false` restarts the data
            stream (quicker start, same epochs and learning-rate schedule).
        init_weights: a `.weights.h5` or `.keras` file of the same model to
            start from (e.g. a finished stage of a two-stage recipe); used
            when the run starts, not when it resumes. `""` = the backbone's
            `backbone_weights` and fresh heads.
        precise_bn_images: training images, at full size and without
            augmentation, over which every batch norm's moving statistics are
            re-estimated before each validation and at the end of the run
            ("precise BN", see `keras_sanet.training.precise_batch_norm`).
            Training on crops leaves statistics of crops, which can describe
            full frames badly. 0 = off (the statistics of training).
        precise_bn_batch_size: batch of those forward passes (images of one
            size only; use 1 for data sets of mixed image sizes).
    """

    batch_size: int = 8
    epochs: int = 40
    steps_per_epoch: int = 0
    learning_rate: float = 0.01
    reference_batch_size: int = 0
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
    init_weights: str = ""
    precise_bn_images: int = 0
    precise_bn_batch_size: int = 4

    def effective_learning_rate(self):
        """The LR the run uses: `learning_rate`, scaled by `batch_size / reference_batch_size`."""
        if self.reference_batch_size:
            return self.learning_rate * self.batch_size / self.reference_batch_size
        return self.learning_rate


@dataclasses.dataclass
class EvalConfig:
    """The test protocol `keras-sanet eval` uses for the run unless told otherwise.

    Args:
        split: the split to score.
        scales: scale factors; the paper's: `[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]`.
        flip: also predict the mirrored images.
        crop_size: `[height, width]` of the sliding window (the training
            crop); `[]` = whole images.
        base_size: `0` scales each image's own size; else scale `s` makes the
            long side `ceil(base_size * s)` (PyTorch-Encoding, 520 on PASCAL).
        stride_ratio: window stride as a fraction of the crop (2/3).
    """

    split: str = "val"
    scales: list = dataclasses.field(default_factory=lambda: [1.0])
    flip: bool = False
    crop_size: list = dataclasses.field(default_factory=list)
    base_size: int = 0
    stride_ratio: float = 2 / 3


@dataclasses.dataclass
class PaperConfig:
    """The figure of the paper a run aims at (informational).

    Args:
        figure: where in the paper, e.g. `"Table 2, row 4"`.
        model: the row's model label in that table, e.g. `"SANet"`, `"FCN50-SE"`.
        backbone: the row's backbone label, e.g. `"Res50"`.
        pixel_accuracy, mean_iou: the paper's numbers in percent (0 = not
            reported).
        note: how the paper measured it, and what we could not match.
    """

    figure: str = ""
    model: str = ""
    backbone: str = ""
    pixel_accuracy: float = 0.0
    mean_iou: float = 0.0
    note: str = ""


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    paper: PaperConfig = dataclasses.field(default_factory=PaperConfig)

    def to_dict(self):
        return dataclasses.asdict(self)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "paper": PaperConfig,
}
DISTRIBUTIONS = ("none", "mirrored", "data_parallel", "auto")
FOLDER_DATASET = "folder"


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
                f"{source}: unknown section [{section}]. Use [data], [model], [train], "
                "[eval] and [paper]."
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
    if t.precise_bn_images < 0 or t.precise_bn_batch_size < 1:
        raise ValueError(
            f"{source}: train.precise_bn_images must be >= 0 (0 = off) and "
            f"train.precise_bn_batch_size >= 1, got {t.precise_bn_images} and "
            f"{t.precise_bn_batch_size}."
        )
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
    from keras_sanet.data.readers import NAMED_DATASETS, named_dataset_info

    if t.reference_batch_size < 0:
        raise ValueError(
            f"{source}: train.reference_batch_size must be >= 0 (0 = no scaling of the "
            f"learning rate), got {t.reference_batch_size}."
        )
    choices = NAMED_DATASETS + (FOLDER_DATASET,)
    if d.dataset not in choices:
        raise ValueError(
            f"{source}: data.dataset={d.dataset!r}; use one of "
            f"{', '.join(repr(c) for c in choices)}."
        )
    if d.dataset != FOLDER_DATASET:
        info = named_dataset_info(d.dataset)
        if d.num_classes not in (0, info.num_classes):
            raise ValueError(
                f"{source}: data.num_classes={d.num_classes} does not match {d.dataset!r}, "
                f"which has {info.num_classes} classes; leave data.num_classes out."
            )
        for key, allow_empty in (("train_split", False), ("val_split", True)):
            value = getattr(d, key)
            if not (allow_empty and value == "") and value not in info.splits:
                raise ValueError(
                    f"{source}: data.{key}={value!r} is not a split of {d.dataset!r}; use one "
                    f"of {', '.join(repr(s) for s in info.splits)}"
                    + (' (or "" for no validation).' if allow_empty else ".")
                )
    if d.val_pad_size and (
        len(d.val_pad_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for v in d.val_pad_size)
    ):
        raise ValueError(
            f"{source}: data.val_pad_size must be [height, width] in pixels (e.g. [512, 512]) "
            f"or [] (native size), got {d.val_pad_size}."
        )
    _validate_eval(config.eval, source)
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


def _validate_eval(e, source):
    if not e.scales or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in e.scales
    ):
        raise ValueError(
            f"{source}: eval.scales must be a non-empty list of positive numbers, e.g. [1.0] "
            f"or [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]; got {e.scales}."
        )
    if e.crop_size and (
        len(e.crop_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in e.crop_size)
    ):
        raise ValueError(
            f"{source}: eval.crop_size must be [height, width] (the sliding window, normally "
            f"the training crop) or [] (whole images); got {e.crop_size}."
        )
    if e.base_size < 0:
        raise ValueError(
            f"{source}: eval.base_size must be >= 0 (0 = scale each image's own size; 520 = "
            f"PyTorch-Encoding's PASCAL protocol), got {e.base_size}."
        )
    if not 0 < e.stride_ratio <= 1:
        raise ValueError(
            f"{source}: eval.stride_ratio must be in (0, 1] (the paper: 2/3), got "
            f"{e.stride_ratio}."
        )


def read_toml(path, what="Config file"):
    """The parsed TOML file `path`; a ValueError naming `what` is missing, or the bad TOML."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} not found. Pass the path of a TOML file.")
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from error


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
    raw = read_toml(path)
    for override in overrides:
        key, sep, value = override.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(
                f"Override {override!r} must look like section.key=value, e.g. train.epochs=2."
            )
        raw.setdefault(section, {})[name] = _parse_value(value.strip())
    return config_from_dict(raw, source=path)
