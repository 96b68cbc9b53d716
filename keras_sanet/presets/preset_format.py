"""The preset folder: saving it, checking its files, loading a SANet from it.

A preset is a folder laid out like a keras-hub preset:

- `config.json`: `keras.saving.serialize_keras_object(model)` of a SANet
  (`module`, `class_name`, `config`, `registered_name`), without build or
  compile state.
- `model.weights.h5`: `model.save_weights(...)` (HDF5, no pickles); or, for
  a large model saved with `max_shard_size`, `model.weights.json` (Keras'
  shard index) and its shards `model_00000.weights.h5`, ... (keras-hub
  shards large presets the same way).
- `metadata.json`: what the model is (dataset, class names, palette, input
  size, how inputs are normalised), how it was made and scored (training
  command, the `keras-sanet eval` results, the training data's licence), the
  versions that wrote it, and under `files` the sha256 and size of every
  other file in the folder. Every file is checked against `files` before
  anything is loaded.
"""

import datetime
import hashlib
import inspect
import json
import os
import posixpath

import keras

from keras_sanet.presets.weights_storage import INT8_MIN_KERNEL_SIZE
from keras_sanet.presets.weights_storage import WEIGHTS_DTYPES
from keras_sanet.presets.weights_storage import float32_weight_files
from keras_sanet.presets.weights_storage import store_weights_as_float16
from keras_sanet.presets.weights_storage import store_weights_as_int8

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
METADATA_FILE = "metadata.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
FORMAT_VERSION = 1
SANET_REGISTERED_NAME = "keras_sanet>SANet"
INPUT_NOTE = (
    "float RGB images in 0..255, channels last, any height and width; the model "
    "normalises them inside (its backbone's ImageNet mean/std, see 'normalization'): "
    "do not normalise inputs yourself"
)
IGNORE_INDEX = 255
_HASH_CHUNK = 1 << 20


def sha256_file(path):
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(folder):
    """`{posix/relative/path: {"sha256", "size"}}` of every file in `folder` but metadata.json."""
    records = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if relative == METADATA_FILE:
                continue
            records[relative] = {"sha256": sha256_file(path), "size": os.path.getsize(path)}
    return dict(sorted(records.items()))


# -- saving --------------------------------------------------------------------


def _normalization_mode(model):
    from keras_sanet.layers.image_normalization import ImageNormalization

    for layer in model.backbone.layers:
        if isinstance(layer, ImageNormalization):
            return layer.mode
    return None


def _load_evaluation(evaluation):
    if evaluation is None:
        return None
    if isinstance(evaluation, (str, os.PathLike)):
        path = os.fspath(evaluation)
        if not os.path.isfile(path):
            raise ValueError(
                f"metadata['evaluation'] names {path!r}, which does not exist. Pass the "
                "JSON written by `keras-sanet eval --output FILE`, or its contents as a dict."
            )
        with open(path, encoding="utf-8") as f:
            evaluation = json.load(f)
    if not isinstance(evaluation, dict):
        raise ValueError(
            f"metadata['evaluation'] must be the dict (or the path of the JSON) written by "
            f"`keras-sanet eval`; got {type(evaluation).__name__}."
        )
    for key in ("mean_iou", "pixel_accuracy"):
        value = evaluation.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(
                f"metadata['evaluation'][{key!r}] must be a fraction in 0..1 as `keras-sanet "
                f"eval` writes it; got {value!r}. Copy the eval JSON unchanged."
            )
    return dict(evaluation)


def _complete_metadata(model, metadata):
    """The user's metadata checked, with the dataset expanded and the automatic fields added."""
    import keras_sanet

    # Imported here: keras_sanet.data's package pulls in tf.data.
    from keras_sanet.data.dataset_info import DatasetInfo
    from keras_sanet.data.dataset_info import dataset_names
    from keras_sanet.data.dataset_info import get_dataset_info

    metadata = dict(metadata or {})
    num_classes = model.num_classes
    dataset = metadata.get("dataset")
    if isinstance(dataset, str) and dataset.lower() in dataset_names():
        registered = get_dataset_info(dataset)
        # A registered name brings its class names, palette and label map along
        # when the model has its classes (a custom class set keeps the name only).
        if registered.num_classes == num_classes:
            dataset = registered
    if isinstance(dataset, DatasetInfo):
        metadata["dataset"] = dataset.name
        metadata.setdefault("class_names", list(dataset.class_names))
        metadata.setdefault("palette", [list(c) for c in dataset.palette])
        metadata.setdefault("ignore_index", dataset.ignore_index)
        metadata.setdefault("label_map", {str(k): v for k, v in dataset.label_map.items()})
    elif dataset is not None and not isinstance(dataset, str):
        raise ValueError(
            f"metadata['dataset'] must be a dataset name or a DatasetInfo; got {dataset!r}."
        )
    class_names = metadata.get("class_names")
    if class_names is None:
        class_names = [f"class {i}" for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"metadata['class_names'] has {len(class_names)} names but the model predicts "
            f"{num_classes} classes; give one name per class, in id order."
        )
    palette = metadata.get("palette")
    if palette is None:
        from keras_sanet.visualization import default_palette

        palette = default_palette(num_classes)
    # DatasetInfo checks the palette's length and colour ranges for us.
    DatasetInfo(name="preset", class_names=class_names, palette=palette)
    input_size = metadata.get("input_size")
    if input_size is not None:
        if (
            not isinstance(input_size, (list, tuple))
            or len(input_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
        ):
            raise ValueError(
                f"metadata['input_size'] must be (height, width) of the training crop, e.g. "
                f"(360, 480); got {input_size!r}."
            )
        input_size = [int(s) for s in input_size]
    metadata.update(
        {
            "format_version": FORMAT_VERSION,
            "class_names": [str(n) for n in class_names],
            "palette": [[int(c) for c in colour] for colour in palette],
            "num_classes": num_classes,
            "ignore_index": int(metadata.get("ignore_index", IGNORE_INDEX)),
            "input_size": input_size,
            "input_format": INPUT_NOTE,
            "normalization": _normalization_mode(model),
            "backbone": model.backbone_name,
            "output_stride": model.output_stride,
            "parameter_count": int(model.count_params()),
            "evaluation": _load_evaluation(metadata.get("evaluation")),
            "keras_sanet_version": keras_sanet.__version__,
            "keras_version": keras.version(),
            "saved_with_backend": keras.backend.backend(),
            "date_saved": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }
    )
    for key in ("dataset", "description", "training_command", "data_license"):
        metadata.setdefault(key, None)
    metadata.setdefault("label_map", {})
    return metadata


def weight_files(folder):
    """The weight files in a preset folder: `model.weights.h5`, or the shard index and shards."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [
        name
        for name in names
        if name in (WEIGHTS_FILE, SHARDED_WEIGHTS_FILE)
        or (name.startswith("model_") and name.endswith(".weights.h5"))
    ]


def _shard_names(index_path):
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    names = set()
    for value in index.get("weight_map", {}).values():
        names.update([value] if isinstance(value, str) else value)
    return sorted(names)


def _update_shard_index_size(folder):
    """Keras' shard index records the float32 byte count; make it the stored one."""
    path = os.path.join(folder, SHARDED_WEIGHTS_FILE)
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    index.setdefault("metadata", {})["total_size"] = sum(
        os.path.getsize(os.path.join(folder, name)) for name in _shard_names(path)
    )
    with open(path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)


def save_preset(
    model, preset_dir, metadata=None, overwrite=False, weights_dtype="float32",
    max_shard_size=None, int8_min_kernel_size=INT8_MIN_KERNEL_SIZE,
):
    """Writes `model` as a preset folder: config.json, model.weights.h5, metadata.json.

    Files already in the folder (e.g. a README.md model card written first)
    are part of the preset: their hashes go into `metadata["files"]` too.

    Args:
        model: a `SANet`.
        preset_dir: the folder to write (created if missing).
        metadata: a dict describing the model. Recognised keys (all optional):
            `name`, `description`, `dataset` (a `DatasetInfo`, or a name;
            a `DatasetInfo` or a registered name such as `"camvid"` also
            fills `class_names`, `palette`, `ignore_index` and `label_map`
            when its class count is the model's), `class_names`, `palette`,
            `ignore_index`,
            `label_map` (`{raw_id: id}` applied to label masks),
            `input_size` (training crop `(height, width)`),
            `training_command`, `evaluation` (the `keras-sanet eval` JSON, as
            a dict or a path), `data_license`. Other JSON-serialisable keys
            are kept. Versions, parameter count, the input note and file
            hashes are added.
        overwrite: replace an existing preset in `preset_dir`.
        weights_dtype: `"float32"`; `"float16"` to store the weights at
            half the size (arrays beyond float16's range stay float32 and
            are listed under `float32_arrays`); or `"int8"` for a quarter:
            kernels in int8 with per-channel float32 scales, listed under
            `int8_arrays` (see `keras_sanet.presets.weights_storage`); kernels
            smaller than `int8_min_kernel_size` are stored in float16 then,
            listed under `float16_arrays`. All load back into float32
            variables; check the mIoU of the stored preset with
            `keras-sanet eval --preset`.
        max_shard_size: None writes one `model.weights.h5`; a size in GiB
            (of float32 weights) writes `model.weights.json` and shards of
            at most that size (halved by `weights_dtype="float16"`, about a
            quarter with `"int8"`), e.g. to keep every file under a host's
            file-size limit.
        int8_min_kernel_size: with `weights_dtype="int8"`, kernels of fewer
            weights are stored in float16 (0: every kernel in int8). Recorded
            in the metadata.

    Returns:
        The completed metadata dict (as written to metadata.json).

    Example:

    ```python
    save_preset(model, "presets/sanet_resnet18_camvid", {
        "dataset": CAMVID_INFO, "input_size": (360, 480),
        "training_command": "keras-sanet train configs/camvid_resnet18.toml",
        "evaluation": "runs/camvid/model.eval-camvid-val.json",
        "data_license": "CamVid: non-commercial research use only",
    })
    ```
    """
    from keras_sanet.models.sanet import SANet

    if not isinstance(model, SANet):
        raise ValueError(
            f"save_preset saves a keras_sanet SANet; got {type(model).__name__}. Save "
            "other Keras models with model.save('file.keras')."
        )
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(
            f"weights_dtype must be one of {WEIGHTS_DTYPES}; got {weights_dtype!r}."
        )
    preset_dir = os.fspath(preset_dir)
    existing = [
        name
        for name in (*REQUIRED_FILES, SHARDED_WEIGHTS_FILE, METADATA_FILE)
        if os.path.exists(os.path.join(preset_dir, name))
    ]
    if existing and not overwrite:
        raise ValueError(
            f"{preset_dir!r} already holds a preset ({', '.join(existing)}). Pick a new "
            "folder, or pass overwrite=True to replace it."
        )
    if not model.built:
        model.build((None, None, None, 3))
    metadata = _complete_metadata(model, metadata)
    metadata.setdefault("name", os.path.basename(os.path.normpath(preset_dir)))
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise ValueError(
            f"metadata must hold JSON values only (strings, numbers, lists, dicts): {error}. "
            "Convert the offending value before saving."
        ) from error
    os.makedirs(preset_dir, exist_ok=True)

    config = keras.saving.serialize_keras_object(model)
    for key in ("build_config", "compile_config"):
        config.pop(key, None)
    with open(os.path.join(preset_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    if getattr(model, "optimizer", None) is not None and model.optimizer.variables:
        # save_weights would also store the optimizer's slots (twice the size for
        # SGD with momentum): a preset carries the model's weights only.
        clean = type(model).from_config(model.get_config())
        clean.build((None, None, None, 3))
        clean.set_weights(model.get_weights())
        model = clean
    for name in weight_files(preset_dir):  # an overwritten preset's weights
        os.remove(os.path.join(preset_dir, name))
    if max_shard_size is None:
        model.save_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    else:
        model.save_weights(
            os.path.join(preset_dir, SHARDED_WEIGHTS_FILE), max_shard_size=max_shard_size
        )
    weight_h5_files = [name for name in weight_files(preset_dir) if name.endswith(".h5")]

    def listed(arrays_per_file):
        return [f"{name}:{array}" for name, arrays in arrays_per_file for array in arrays]

    if weights_dtype == "float16":
        # The arrays beyond float16's range, kept in float32.
        kept = listed(
            (name, store_weights_as_float16(os.path.join(preset_dir, name)))
            for name in weight_h5_files
        )
        if kept:
            metadata["float32_arrays"] = kept
    elif weights_dtype == "int8":
        stored = [
            (name, store_weights_as_int8(os.path.join(preset_dir, name), int8_min_kernel_size))
            for name in weight_h5_files
        ]
        metadata["int8_min_kernel_size"] = int8_min_kernel_size
        for key, index in (("int8_arrays", 0), ("float16_arrays", 1)):
            arrays = listed((name, arrays[index]) for name, arrays in stored)
            if arrays:
                metadata[key] = arrays
    if max_shard_size is not None:
        _update_shard_index_size(preset_dir)
    metadata["weights_dtype"] = weights_dtype
    metadata["files"] = file_records(preset_dir)
    with open(os.path.join(preset_dir, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
        f.write("\n")
    return metadata


# -- checking ------------------------------------------------------------------


def read_metadata(folder, source=None):
    """The parsed metadata.json of a preset folder (not yet checked against the files)."""
    source = source or folder
    path = os.path.join(folder, METADATA_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"Preset {source!r} has no {METADATA_FILE} (looked in {folder!r}): it is not a "
            "keras-sanet preset folder, or it is incomplete. Pass the folder written by "
            "save_preset / SANet.save_to_preset, or a preset name from "
            "keras_sanet.list_presets()."
        )
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); the preset is damaged. Get a fresh copy."
        ) from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("files"), dict):
        raise ValueError(
            f"{path} has no 'files' table of sha256 hashes, so the preset cannot be "
            "checked. Save it again with keras_sanet.presets.save_preset."
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"Preset {source!r} has format_version {version!r}; this keras-sanet reads "
            f"format {FORMAT_VERSION}. Upgrade keras-sanet (pip install -U keras-sanet)."
        )
    return metadata


def _safe_relative_path(name, source):
    normalized = posixpath.normpath(str(name))
    if (
        posixpath.isabs(normalized)
        or normalized.startswith("..")
        or "\\" in normalized
        or normalized in (".", METADATA_FILE)
    ):
        raise ValueError(
            f"Preset {source!r} lists the file {name!r}, which is not a plain path inside "
            "the preset folder; refusing to read it. Use a preset from a trusted source."
        )
    return normalized


def listed_files(metadata, source):
    """The relative paths metadata.json lists, checked to stay inside the folder."""
    names = [_safe_relative_path(name, source) for name in metadata["files"]]
    weights = SHARDED_WEIGHTS_FILE if SHARDED_WEIGHTS_FILE in names else WEIGHTS_FILE
    for required in (CONFIG_FILE, weights):
        if required not in names:
            raise ValueError(
                f"Preset {source!r}: metadata.json lists no hash for {required}, so it "
                "cannot be checked. Save the preset again with save_preset."
            )
    return names


def verify_preset(folder, metadata=None, source=None, fix=None):
    """Checks every file metadata.json lists against its sha256 and size.

    Args:
        folder: the local preset folder.
        metadata: its metadata (read from the folder if `None`).
        source: what the user asked for, for the messages.
        fix: how to get an intact copy, for the messages.

    Returns:
        The metadata.

    Raises:
        ValueError: a file is missing, or its size or sha256 differs from
            metadata.json; the message names the file, both hashes and the fix.
    """
    source = source or folder
    fix = fix or (
        "Copy the preset again from where you got it (or, if you changed it on purpose, "
        "save it again with save_preset so metadata.json lists the new hashes)."
    )
    if metadata is None:
        metadata = read_metadata(folder, source)
    for name in listed_files(metadata, source):
        record = metadata["files"][name]
        path = os.path.join(folder, *name.split("/"))
        expected = record.get("sha256") if isinstance(record, dict) else None
        if not isinstance(expected, str) or len(expected) != 64:
            raise ValueError(
                f"Preset {source!r}: metadata.json has no valid sha256 for {name} "
                f"(got {record!r}). Save the preset again with save_preset."
            )
        if not os.path.isfile(path):
            raise ValueError(
                f"Preset {source!r} is missing {name} (expected at {path}, sha256 "
                f"{expected}). {fix}"
            )
        actual = sha256_file(path)
        if actual != expected.lower():
            size = os.path.getsize(path)
            expected_size = record.get("size")
            sizes = (
                f"; size {size} bytes, expected {expected_size}"
                if expected_size is not None
                else ""
            )
            truncated = (
                " (the file is truncated: an interrupted copy or download?)"
                if isinstance(expected_size, int) and size < expected_size
                else ""
            )
            raise ValueError(
                f"Preset {source!r}: {name} is damaged or was altered{truncated}: sha256 "
                f"{actual}, expected {expected}{sizes} ({path}). Nothing was loaded. {fix}"
            )
    return metadata


# -- loading -------------------------------------------------------------------


def _read_config(folder, source):
    path = os.path.join(folder, CONFIG_FILE)
    with open(path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}).") from error
    if (
        not isinstance(config, dict)
        or config.get("class_name") != "SANet"
        or config.get("registered_name") != SANET_REGISTERED_NAME
        or not isinstance(config.get("config"), dict)
    ):
        found = (
            (config.get("registered_name") or config.get("class_name"))
            if isinstance(config, dict)
            else config
        )
        raise ValueError(
            f"Preset {source!r}: config.json describes {found!r}, not a keras_sanet SANet "
            f"({SANET_REGISTERED_NAME!r}). SANet.from_preset only builds SANet models; "
            "load other Keras models with their own class."
        )
    return config


def _check_overrides(overrides):
    from keras_sanet.models.sanet import SANet

    parameters = inspect.signature(SANet.__init__).parameters
    allowed = {n for n, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}
    allowed |= {"dtype", "name", "trainable"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(
            f"Unknown SANet argument(s) {', '.join(unknown)} for from_preset. Valid ones: "
            f"{', '.join(sorted(allowed))}."
        )


def _build_sanet(config, model_config):
    """A SANet from `config` with `model_config` as its arguments (safe deserialization)."""
    config = dict(config, config=model_config)
    # safe_mode refuses lambdas and pickled code; the class was checked above.
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    model.build((None, None, None, 3))
    return model


def classifier_layers(model):
    """The layers of `model` whose outputs are classes: re-initialised when num_classes changes.

    The four SA heads' 1x1 classifier convs, the SE head's last Dense layer
    and the auxiliary head's 1x1 conv.
    """
    heads = model.heads
    layers = list(heads.head_classifiers)
    if heads.categorical_head:
        layers.append(heads.se_head_logits)
    if heads.auxiliary_head:
        layers.append(heads.aux_classifier)
    return layers


def transfer_all_but_classifiers(source, target):
    """Copies every weight of `source` into `target` except the classifiers'.

    Both are built SANets of the same architecture but for `num_classes`.
    Returns the names of the layers left at their initial values.
    """
    skipped_layers = classifier_layers(target)
    skipped = {id(v) for layer in skipped_layers for v in layer.weights}
    if len(source.weights) != len(target.weights):
        raise ValueError(
            f"Cannot transfer weights: the preset's model has {len(source.weights)} "
            f"variables, the new one {len(target.weights)}. Change only num_classes "
            "(and dtype) when fine-tuning from a preset."
        )
    for source_variable, target_variable in zip(source.weights, target.weights):
        if id(target_variable) in skipped:
            continue
        if source_variable.path != target_variable.path or tuple(
            source_variable.shape
        ) != tuple(target_variable.shape):
            raise ValueError(
                f"Cannot transfer {source_variable.path} {tuple(source_variable.shape)} "
                f"into {target_variable.path} {tuple(target_variable.shape)}: the "
                "architectures differ. Change only num_classes when fine-tuning."
            )
        target_variable.assign(keras.ops.convert_to_numpy(source_variable.value))
    return [layer.name for layer in skipped_layers]


def _checked_weights_path(folder, metadata, source):
    """The file to `load_weights`; a shard index may only name shards metadata.json hashes."""
    if SHARDED_WEIGHTS_FILE not in metadata["files"]:
        return os.path.join(folder, WEIGHTS_FILE)
    index_path = os.path.join(folder, SHARDED_WEIGHTS_FILE)
    try:
        shards = _shard_names(index_path)
    except (json.JSONDecodeError, AttributeError, TypeError) as error:
        raise ValueError(
            f"Preset {source!r}: {SHARDED_WEIGHTS_FILE} is not a Keras shard index ({error}). "
            "Save the preset again with save_preset."
        ) from error
    unlisted = [name for name in shards if name not in metadata["files"] or "/" in name]
    if unlisted or not shards:
        raise ValueError(
            f"Preset {source!r}: {SHARDED_WEIGHTS_FILE} names shards that metadata.json does "
            f"not hash ({', '.join(unlisted) or 'none at all'}), so they cannot be checked. "
            "Nothing was loaded. Save the preset again with save_preset."
        )
    return index_path


def load_preset_folder(folder, source=None, fix=None, num_classes=None, **kwargs):
    """Checks a local preset folder and builds its SANet. Returns `(model, metadata)`.

    See `SANet.from_preset` for `num_classes` and `kwargs`.
    """
    source = source or folder
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be None or an integer >= 1, got {num_classes!r}.")
    _check_overrides(kwargs)
    # Every file is checked before any of them is parsed.
    metadata = verify_preset(folder, source=source, fix=fix)
    config = _read_config(folder, source)
    model_config = dict(config["config"])
    model_config.update(kwargs)
    model_config["backbone_weights"] = None  # the preset's weights replace them anyway
    weights_path = _checked_weights_path(folder, metadata, source)
    preset_classes = model_config.get("num_classes")

    model = _build_sanet(config, model_config)
    with float32_weight_files(weights_path, weight_files(folder), source) as path:
        model.load_weights(path)
    if num_classes is None or num_classes == preset_classes:
        return model, metadata

    target = _build_sanet(config, dict(model_config, num_classes=num_classes))
    reinitialised = transfer_all_but_classifiers(model, target)
    print(
        f"SANet.from_preset({source!r}): the preset predicts {preset_classes} classes, "
        f"num_classes={num_classes}: re-initialised the classifier layers "
        f"{', '.join(reinitialised)}; loaded every other weight (backbone, attention "
        "heads, SE head hidden layer, auxiliary conv). Fine-tune the model before use."
    )
    return target, metadata


def load_preset(preset, num_classes=None, **kwargs):
    """Finds, downloads if needed, checks and loads a preset. Returns `(model, metadata)`.

    `SANet.from_preset` returns the model alone; the metadata carries the
    class names, palette and scores (e.g. for drawing predictions).
    Arguments as for `SANet.from_preset`.

    Example:

    ```python
    model, metadata = load_preset("sanet_resnet18_camvid")
    metadata["class_names"][:3]  # ['Sky', 'Building', 'Pole']
    ```
    """
    from keras_sanet.presets.download import resolve_preset

    resolved = resolve_preset(preset)
    return load_preset_folder(
        resolved.folder,
        source=resolved.source,
        fix=resolved.fix,
        num_classes=num_classes,
        **kwargs,
    )
