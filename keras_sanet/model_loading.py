"""The model a command is given: --preset, --weights/--model [--config], --run-dir, --dataset.

One loader for `keras-sanet predict`, `eval`, `attention` and `export`. Each
command adds the model flags it takes with `add_model_arguments`;
`load_model_for_command` checks them (errors name the problem and the fix) and
returns the model with what is known of its classes: a preset's metadata, or the
class names, colours and label map of the dataset a saved model was trained on.
Inference commands also take `--dtype POLICY` (e.g. `mixed_bfloat16`): the
model is loaded under that Keras dtype policy.

Example:

```python
parser = argparse.ArgumentParser()
add_model_arguments(parser)
model, metadata = load_model_for_command(parser.parse_args(["--preset", "my_preset"]))
class_names, palette = class_names_and_palette(model, metadata)
```
"""

import dataclasses
import functools
import json
import os

RUN_DIR_CONFIG = "config.json"
# --checkpoint -> file inside a run folder, as keras_sanet.training.trainer writes them.
RUN_DIR_CHECKPOINTS = {
    "final": "model.keras",
    "best": os.path.join("checkpoints", "best.weights.h5"),
    "last": os.path.join("checkpoints", "last.weights.h5"),
}


@dataclasses.dataclass(frozen=True)
class ModelFlags:
    """The model flags of one command (`add_model_arguments` stores them in the args).

    Args:
        path_flags: the flag of a saved model file and its aliases; the first
            names it in messages.
        weights_files: also take `.weights.h5` files, built from `--config`.
        run_dir: take `--run-dir RUN --checkpoint final|best|last`.
        dataset: take `--dataset NAME`, the class names, colours and label map
            of a saved model.
        data_config: `--config` also gives the command's data defaults, so it
            goes with a preset too.
        dtype: take `--dtype POLICY`, the Keras dtype policy to load the model
            under (e.g. `mixed_bfloat16`).
    """

    path_flags: tuple = ("--weights", "--model")
    weights_files: bool = True
    run_dir: bool = False
    dataset: bool = True
    data_config: bool = False
    dtype: bool = False

    @property
    def path_flag(self):
        return self.path_flags[0]

    def alternatives(self):
        """The ways to give a model, for messages and help."""
        path = self.path_flag
        ways = ["--preset NAME_OR_DIR", f"{path} FILE.keras"]
        if self.weights_files:
            ways.append(f"{path} FILE.weights.h5 --config CONFIG")
        if self.run_dir:
            ways.append("--run-dir RUN")
        return ", ".join(ways[:-1]) + " or " + ways[-1]

    def preset_excludes(self):
        """The flags that go with a saved model only (a preset carries what they give)."""
        flags = ["--dataset"] if self.dataset else []
        if self.weights_files and not self.data_config:
            flags.append("--config")
        return flags


def add_model_arguments(parser, **flags):
    """Adds the model flags of a command to an argparse parser.

    Args:
        parser: an argparse parser.
        **flags: `ModelFlags` fields: by default --preset, --weights (alias
            --model), --config and --dataset.

    Example:
    >>> import argparse
    >>> add_model_arguments(argparse.ArgumentParser(), path_flags=("--model",),
    ...                     weights_files=False)
    """
    flags = ModelFlags(**flags)
    sources = ["--preset", flags.path_flag] + (["--run-dir"] if flags.run_dir else [])
    group = parser.add_argument_group(f"model (give exactly one of {', '.join(sources)})")
    group.add_argument("--preset", metavar="NAME_OR_DIR", help="a zoo preset name, folder or URL")
    group.add_argument(
        *flags.path_flags, dest="weights", metavar="PATH" if flags.weights_files else "FILE.keras",
        help="a .keras model file, or a .weights.h5 file together with --config"
        if flags.weights_files else "a saved .keras model",
    )
    if flags.weights_files:
        group.add_argument(
            "--config", metavar="PATH",
            help="training config (.toml, or a run's config.json) building the SANet for a "
            ".weights.h5 file" + (", and the data defaults" if flags.data_config else ""),
        )
    if flags.run_dir:
        group.add_argument(
            "--run-dir", metavar="DIR",
            help=f"training output folder (holding model.keras, checkpoints/, {RUN_DIR_CONFIG})",
        )
        group.add_argument(
            "--checkpoint", choices=tuple(RUN_DIR_CHECKPOINTS), default="final",
            help="with --run-dir: final (model.keras, default), best or last (checkpoints/)",
        )
    if flags.dataset:
        group.add_argument(
            "--dataset", metavar="NAME",
            help=f"with {flags.path_flag}: the dataset whose class names, colours and label "
            "map to use (e.g. camvid)",
        )
    if flags.dtype:
        group.add_argument(
            "--dtype", metavar="POLICY",
            help="Keras dtype policy to run the model under, e.g. mixed_bfloat16 or "
            "mixed_float16 (float32 weights, 16-bit compute, float32 logits; default: the "
            "model's own, float32 for the zoo)",
        )
    parser.set_defaults(model_flags=flags)


# -- reading and building ----------------------------------------------------------


def read_config(path):
    """A training config from its TOML file or a run's config.json."""
    from keras_sanet.training.config import config_from_dict
    from keras_sanet.training.config import load_config

    if path.endswith(".json"):
        if not os.path.isfile(path):
            raise ValueError(
                f"Config file {path!r} not found. Pass the path of a run's config.json."
            )
        with open(path, encoding="utf-8") as f:
            try:
                raw = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from error
        return config_from_dict(raw, source=path)
    return load_config(path)


def load_keras_model(path):
    """Loads a `.keras` file in safe mode, with our layers registered."""
    import keras

    import keras_sanet.models  # noqa: F401  (registers SANet and its layers)

    if not os.path.isfile(path):
        raise ValueError(f"The model file {path!r} does not exist; check the path.")
    return keras.saving.load_model(path, safe_mode=True)


def build_model_from_config(config, num_classes, weights_path):
    """A SANet with `config.model`'s arguments, loaded from a `.weights.h5` file."""
    from keras_sanet.training.trainer import build_model

    if not os.path.isfile(weights_path):
        raise ValueError(f"The weights file {weights_path!r} does not exist; check the path.")
    # The file holds every weight: never download or read backbone weights again.
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, backbone_weights="")
    )
    model = build_model(config, num_classes)
    model.build((None, None, None, 3))
    try:
        model.load_weights(weights_path)
    except ValueError as error:
        raise ValueError(
            f"Could not load {weights_path!r} into a SANet built from the config "
            f"({error}). Pass the config the weights were trained with (same backbone, "
            "output_stride, heads and num_classes)."
        ) from error
    return model


def model_num_classes(model):
    """The classes a model predicts: its `num_classes`, else its output's channels."""
    num_classes = getattr(model, "num_classes", None)
    return int(model.output_shape[-1]) if num_classes is None else num_classes


def class_names_and_palette(model, metadata):
    """`(class_names, palette)` from the metadata, else `"class <id>"` and VOC's colours."""
    from keras_sanet.visualization import default_palette

    num_classes = model_num_classes(model)
    return (
        metadata.get("class_names") or [f"class {i}" for i in range(num_classes)],
        metadata.get("palette") or default_palette(num_classes),
    )


def _config_num_classes(config, config_path):
    from keras_sanet.data.dataset_info import get_dataset_info

    if config.data.dataset != "folder":
        return get_dataset_info(config.data.dataset).num_classes
    if config.data.num_classes < 1:
        raise ValueError(
            f"{config_path} has no data.num_classes; add it (the classes the weights were "
            "trained on), or pass the .keras model instead."
        )
    return config.data.num_classes


def _dataset_metadata(model, dataset):
    """The class names, colours and label map of the named dataset; {} for None."""
    if not dataset:
        return {}
    from keras_sanet.data.dataset_info import get_dataset_info

    info = get_dataset_info(dataset)
    num_classes = model_num_classes(model)
    if info.num_classes != num_classes:
        raise ValueError(
            f"The model predicts {num_classes} classes but {info.name} has "
            f"{info.num_classes}. Pass the --dataset the model was trained on."
        )
    return {
        "dataset": info.name,
        "class_names": list(info.class_names),
        "palette": [list(colour) for colour in info.palette],
        "ignore_index": info.ignore_index,
        "label_map": dict(info.label_map),
    }


# -- the flags -----------------------------------------------------------------------


@dataclasses.dataclass
class ModelSource:
    """Where a command's model comes from, its flags checked; `load` loads it.

    Exactly one of `preset` and `path` (a `.keras` or `.weights.h5` file) is
    set; `config_path` builds a `.weights.h5` file's SANet (and, for `eval`,
    gives the data defaults); `dataset` names the class names of a saved model;
    `dtype` is the dtype policy to load the model under (None: its own).
    """

    flags: ModelFlags
    preset: str = None
    path: str = None
    config_path: str = None
    dataset: str = None
    dtype: str = None

    @functools.cached_property
    def config(self):
        """The training config of `config_path` (read once), or None."""
        return read_config(self.config_path) if self.config_path else None

    @property
    def from_weights_file(self):
        """True for a `.weights.h5` file: `load` builds its SANet from the config."""
        return bool(self.path) and self.path.endswith(".weights.h5")

    def load(self, num_classes=None):
        """Returns `(model, metadata)`.

        Args:
            num_classes: the classes of a `.weights.h5` file's SANet (default:
                the config's dataset's, or its data.num_classes).

        The metadata is a preset's (dataset, class names, palette, ignore
        index, label map, input size...), else the `--dataset`'s (for a
        `.weights.h5` file, the config's named dataset's) class names, palette,
        ignore index and label map, else empty.
        """
        if self.preset:
            from keras_sanet.presets import load_preset

            overrides = {"dtype": self.dtype} if self.dtype else {}
            model, metadata = load_preset(self.preset, **overrides)
            return model, dict(metadata)
        from keras_sanet.models.dtype_policy import with_dtype_policy

        dataset = self.dataset
        if not self.from_weights_file:
            model = load_keras_model(self.path)
        else:
            config = self.config
            if num_classes is None:
                num_classes = _config_num_classes(config, self.config_path)
            model = build_model_from_config(config, num_classes, self.path)
            if dataset is None and self.flags.dataset and config.data.dataset != "folder":
                dataset = config.data.dataset
        model = with_dtype_policy(model, self.dtype)
        return model, _dataset_metadata(model, dataset)


def _run_dir_files(run_dir, checkpoint, config_path):
    """`(weights_path, config_path)` of a training output folder."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"The run folder {run_dir!r} does not exist; check the path.")
    weights = os.path.join(run_dir, RUN_DIR_CHECKPOINTS[checkpoint])
    if not os.path.isfile(weights):
        others = [
            name for name, path in RUN_DIR_CHECKPOINTS.items()
            if os.path.isfile(os.path.join(run_dir, path))
        ]
        raise ValueError(
            f"{run_dir!r} has no {RUN_DIR_CHECKPOINTS[checkpoint]} (--checkpoint {checkpoint})"
            + (
                f"; use --checkpoint {' or '.join(others)}" if others
                else "; is it a keras-sanet training folder? Pass --weights FILE instead"
            )
            + "."
        )
    run_config = os.path.join(run_dir, RUN_DIR_CONFIG)
    if config_path is None and os.path.isfile(run_config):
        config_path = run_config
    if weights.endswith(".weights.h5") and config_path is None:
        raise ValueError(
            f"{run_dir!r} has no {RUN_DIR_CONFIG} to build the SANet for {weights!r}; pass "
            "--config TRAIN_CONFIG.toml."
        )
    return weights, config_path


def _check_model_file(flags, path, config_path):
    flag = flags.path_flag
    if not flags.weights_files:
        if not path.endswith(".keras"):
            raise ValueError(
                f"{flag} {path!r} must be a .keras file (model.save). For a preset folder "
                "use --preset."
            )
    elif not path.endswith((".keras", ".weights.h5")):
        raise ValueError(
            f"{flag} {path!r} must be a .keras model file or a .weights.h5 weights file "
            "(with --config). For a preset folder use --preset."
        )
    elif path.endswith(".weights.h5") and not config_path:
        raise ValueError(
            f"{flag} {path!r} holds weights only; add --config TRAIN_CONFIG.toml (or the "
            "run's config.json) so the SANet can be built, or pass the .keras file."
        )


def resolve_model_source(args):
    """Checks the model flags of parsed `args` (see `add_model_arguments`); loads nothing.

    Returns:
        A `ModelSource`. Files are checked for existence when loaded, except a
        `--run-dir` folder's, which pick the file.
    """
    flags = args.model_flags
    path = args.weights
    config_path = args.config if flags.weights_files else None
    run_dir = args.run_dir if flags.run_dir else None
    dataset = args.dataset if flags.dataset else None
    dtype = None
    if flags.dtype and args.dtype is not None:
        from keras_sanet.models.dtype_policy import get_dtype_policy

        # Checked before any loading; an empty --dtype "" is a mistake, not "the default".
        dtype = get_dtype_policy(args.dtype, flag="--dtype").name
    given = [
        flag for flag, value in (("--preset", args.preset), (flags.path_flag, path),
                                 ("--run-dir", run_dir)) if value
    ]
    if len(given) != 1:
        if not given:
            got = "none"
        else:
            got = ("both " if len(given) == 2 else "") + (
                ", ".join(given[:-1]) + f" and {given[-1]}"
            )
        raise ValueError(f"Give exactly one model source: {flags.alternatives()} (got {got}).")
    if flags.run_dir and args.checkpoint != "final" and not run_dir:
        raise ValueError(
            f"--checkpoint {args.checkpoint} picks a file of a training folder; add "
            f"--run-dir RUN, or pass the file itself with {flags.path_flag}."
        )
    if args.preset:
        excluded = flags.preset_excludes()
        if dataset or (config_path and "--config" in excluded):
            several = len(excluded) > 1
            raise ValueError(
                f"{' and '.join(excluded)} go{'' if several else 'es'} with {flags.path_flag}; "
                "a preset carries its own architecture, class names and colours. Leave "
                f"{'them' if several else excluded[0]} out."
            )
        return ModelSource(flags, preset=args.preset, config_path=config_path, dtype=dtype)
    if run_dir:
        path, config_path = _run_dir_files(run_dir, args.checkpoint, config_path)
    else:
        _check_model_file(flags, path, config_path)
    return ModelSource(flags, path=path, config_path=config_path, dataset=dataset, dtype=dtype)


def load_model_for_command(args):
    """Checks the model flags of parsed `args` and loads the model.

    Returns:
        `(model, metadata)`; see `ModelSource.load` for the metadata.
    """
    return resolve_model_source(args).load()
