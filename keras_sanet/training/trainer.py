"""Training a SANet from a `Config`: datasets, model, paper optimizer, fit, resume."""

import contextlib
import json
import os
import warnings

import keras
import numpy as np

from keras_sanet import devices
from keras_sanet.training.backup import TrainingBackup
from keras_sanet.training.backup import read_backup_epoch
from keras_sanet.training.best_checkpoint import BestCheckpoint
from keras_sanet.training.config import Config
from keras_sanet.training.epoch_log import EpochLog
from keras_sanet.training.epoch_log import history_from_log
from keras_sanet.training.epoch_log import read_log
from keras_sanet.training.optimizers import sgd_poly
from keras_sanet.training.precise_batch_norm import PreciseBatchNorm
from keras_sanet.training.precise_batch_norm import recalibrate_batch_norm

BEST_METRIC = "val_mean_iou"
# Train settings that fix the data stream and the learning-rate schedule of a run.
SCHEDULE_KEYS = (
    "batch_size",
    "epochs",
    "steps_per_epoch",
    "learning_rate",
    "reference_batch_size",
    "poly_power",
    "seed",
)


def resolve_distribution(kind):
    """`"auto"` -> the distribution this backend and machine call for; other kinds unchanged.

    `"auto"` is `"mirrored"` on TensorFlow and `"data_parallel"` on JAX when
    more than one GPU/TPU is visible, else `"none"` (one device, or the
    PyTorch backend, for which Keras has no multi-device training: a warning
    says so when several GPUs are visible).

    Example:
    >>> resolve_distribution("auto")  # on a CPU-only machine
    'none'
    """
    if kind != "auto":
        return kind
    backend = keras.backend.backend()
    count = devices.accelerator_count(backend)
    if count > 1 and backend == "tensorflow":
        return "mirrored"
    if count > 1 and backend == "jax":
        return "data_parallel"
    if count > 1:
        warnings.warn(
            f"{count} GPUs are visible but the {backend} backend trains on one device (Keras "
            "has no PyTorch distribution); use KERAS_BACKEND=tensorflow or jax to use them all.",
            stacklevel=2,
        )
    return "none"


def check_distribution(kind):
    """Raises a ValueError unless distribution `kind` runs on the current backend.

    Args:
        kind: `"none"`, `"mirrored"` (TensorFlow), `"data_parallel"` (JAX) or
            `"auto"` (always runs; see `resolve_distribution`).

    Example:
    >>> check_distribution("none")
    """
    kind = resolve_distribution(kind)
    backend = keras.backend.backend()
    if kind == "mirrored" and backend != "tensorflow":
        raise ValueError(
            f"distribution='mirrored' needs KERAS_BACKEND=tensorflow (it is {backend!r}). "
            "On JAX use distribution='data_parallel'; Keras has no multi-device "
            "training for PyTorch, use distribution='none' there."
        )
    if kind == "data_parallel" and backend != "jax":
        raise ValueError(
            f"distribution='data_parallel' needs KERAS_BACKEND=jax (it is {backend!r}). "
            "On TensorFlow use distribution='mirrored'; on PyTorch use 'none'."
        )
    if kind not in ("none", "mirrored", "data_parallel"):
        raise ValueError(
            f"Unknown distribution {kind!r}; use 'none', 'mirrored', 'data_parallel' or 'auto'."
        )



def distribution_scope(kind):
    """The context in which a model is built, trained and saved across devices.

    `"mirrored"`: `tf.distribute.MirroredStrategy` over the local devices
    (TensorFlow backend). `"data_parallel"`: `keras.distribution.DataParallel`
    over the local devices (JAX backend), active only inside the context.
    Keras 3 has no distribution for PyTorch: train it on one device.

    Args:
        kind: `"none"`, `"mirrored"` or `"data_parallel"`.

    Example:
    >>> with distribution_scope("none"):
    ...     model = build_model(config, num_classes=11)
    """
    check_distribution(kind)
    kind = resolve_distribution(kind)
    if kind == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope()
    if kind == "data_parallel":
        devices = keras.distribution.list_devices()
        return keras.distribution.DataParallel(devices=devices).scope()
    return contextlib.nullcontext()


def replica_count(kind):
    """Replicas of distribution `kind`; call it inside its `distribution_scope`.

    Example:
    >>> with distribution_scope("none"):
    ...     replica_count("none")
    1
    """
    kind = resolve_distribution(kind)
    if kind == "mirrored":
        import tensorflow as tf

        return int(tf.distribute.get_strategy().num_replicas_in_sync)
    if kind == "data_parallel":
        return len(keras.distribution.distribution().device_mesh.devices.flatten())
    return 1


@contextlib.contextmanager
def synchronized_batch_norm(model, enabled):
    """Batch statistics over all replicas while training (TensorFlow only).

    Set for the duration of `fit` only, so that a saved model stays loadable
    on backends where `synchronized=True` is refused.

    Args:
        model: the model whose `BatchNormalization` layers to switch.
        enabled: switch them on (else the context changes nothing).

    Example:
    >>> with synchronized_batch_norm(model, enabled=True):
    ...     model.fit(train_ds, epochs=1)
    """
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if enabled:
        for layer in layers:
            layer.synchronized = True
    try:
        yield len(layers) if enabled else 0
    finally:
        for layer in layers:
            layer.synchronized = False


def pad_batch_for_replicas(images, masks, replicas, ignore_index=255):
    """Pads a batch with blank images and all-ignored masks to a multiple of `replicas`.

    JAX's data-parallel sharding needs every batch to split evenly over the
    devices (and TensorFlow's mirrored strategy one image per replica), but a
    validation split rarely divides evenly (CamVid val has 101 images).
    Ignored pixels count in no metric, so mIoU and pixel accuracy stay exact;
    `val_loss` gains the padded images' categorical-loss term.

    Example:
    >>> val_ds = val_ds.map(lambda x, y: pad_batch_for_replicas(x, y, 2))
    """
    import tensorflow as tf

    missing = (-tf.shape(images)[0]) % replicas
    images = tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0]])
    masks = tf.pad(masks, [[0, missing], [0, 0], [0, 0]], constant_values=ignore_index)
    return images, masks


def build_datasets(config: Config, replicas=1):
    """Returns `(train_ds, val_ds, train_pairs_count, num_classes, class_names)`.

    Args:
        config: the run's `Config`.
        replicas: devices the batches are split over; validation batches get
            at least that many images and are padded to a multiple of it
            (see `pad_batch_for_replicas`).
    """
    from keras_sanet import data

    d, t = config.data, config.train
    val_batch_size = max(d.val_batch_size, replicas)
    common = dict(
        crop_size=tuple(d.crop_size),
        base_size=d.base_size or None,
        scale_range=tuple(d.scale_range),
        flip=d.flip,
    )
    val_pad_size = tuple(d.val_pad_size) or None
    if d.dataset != "folder":
        # A named dataset: camvid, voc, voc_aug, context59, context60.
        info = data.named_dataset_info(d.dataset)
        train_count = len(data.named_pairs(d.dataset, d.root, d.train_split))
        train = data.named_dataset(
            d.dataset, d.root, d.train_split, augment=True, shuffle=True,
            batch_size=t.batch_size, seed=t.seed, repeat=True, drop_remainder=True, **common,
        )
        val = None
        if d.val_split:
            val = data.named_dataset(
                d.dataset, d.root, d.val_split, augment=False, shuffle=False,
                batch_size=val_batch_size, eval_pad_size=val_pad_size,
            )
        val = _pad_for_replicas(val, replicas)
        return train, val, train_count, info.num_classes, list(info.class_names)
    label_map = {int(k): int(v) for k, v in d.label_map.items()} or None
    train_pairs = data.folder_pairs(d.train_images, d.train_masks)
    train = data.segmentation_dataset(
        train_pairs, d.num_classes, label_map=label_map, augment=True, shuffle=True,
        batch_size=t.batch_size, seed=t.seed, repeat=True, drop_remainder=True, **common,
    )
    val = None
    if d.val_images:
        val_pairs = data.folder_pairs(d.val_images, d.val_masks)
        val = data.segmentation_dataset(
            val_pairs, d.num_classes, label_map=label_map, batch_size=val_batch_size,
            eval_pad_size=val_pad_size,
        )
    names = [f"class_{i}" for i in range(d.num_classes)]
    return train, _pad_for_replicas(val, replicas), len(train_pairs), d.num_classes, names


def build_precise_bn_images(config: Config):
    """Batches of `train.precise_bn_images` full-size training images (None when it is 0).

    The images are spread evenly over the training split (every k-th pair),
    read at their own size without augmentation, like validation images.

    Example:
    >>> images = build_precise_bn_images(load_config("configs/camvid_resnet50_os16.toml"))
    """
    from keras_sanet import data

    d, t = config.data, config.train
    if not t.precise_bn_images:
        return None
    if d.dataset != "folder":
        count = len(data.named_pairs(d.dataset, d.root, d.train_split))
        pairs = data.named_dataset(
            d.dataset, d.root, d.train_split, augment=False, shuffle=False, progress=False
        )
    else:
        label_map = {int(k): int(v) for k, v in d.label_map.items()} or None
        train_pairs = data.folder_pairs(d.train_images, d.train_masks)
        count = len(train_pairs)
        pairs = data.segmentation_dataset(
            train_pairs, d.num_classes, label_map=label_map, augment=False, shuffle=False,
            progress=False,
        )
    stride = max(1, count // t.precise_bn_images)
    return (
        pairs.shard(stride, 0)
        .take(t.precise_bn_images)
        .map(lambda image, mask: image)
        .batch(t.precise_bn_batch_size)
    )


def _recalibrate_finished_run(config, out, val_ds, verbose):
    """Precise BN for a run that finished its epochs without it (e.g. the option came later)."""
    t = config.train
    model_path = os.path.join(out, "model.keras")
    history_path = os.path.join(out, "history.json")
    model = keras.saving.load_model(model_path, safe_mode=True)
    print(f"{out} finished its epochs without precise BN; recalibrating its batch norms on "
          f"{t.precise_bn_images} full-size training images.")
    recalibrate_batch_norm(model, build_precise_bn_images(config), verbose=int(verbose != 0))
    final = None
    if val_ds is not None:
        final = model.evaluate(val_ds, return_dict=True, verbose=verbose)
    partial = os.path.join(out, "partial.model.keras")
    model.save(partial)
    os.replace(partial, model_path)
    with open(history_path) as f:
        history = json.load(f)
    history["precise_bn"] = {
        "images": t.precise_bn_images,
        "batch_size": t.precise_bn_batch_size,
        "after_training": True,
        "validation": {key: float(value) for key, value in (final or {}).items()},
    }
    with open(history_path, "w") as f:
        json.dump(history, f, indent=2)
    # The run is now the one the config describes, precise BN included.
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    return model


def _pad_for_replicas(val, replicas):
    if val is None or replicas == 1:
        return val
    return val.map(lambda images, masks: pad_batch_for_replicas(images, masks, replicas))


def build_model(config: Config, num_classes):
    """The `SANet` of `config.model` with `num_classes` classes (unbuilt, uncompiled)."""
    from keras_sanet.models.sanet import SANet

    m = config.model
    return SANet(
        backbone=m.backbone,
        num_classes=num_classes,
        output_stride=m.output_stride,
        attention=m.attention,
        categorical_head=m.categorical_head,
        auxiliary_head=m.auxiliary_head,
        se_mode=m.se_mode,
        # Configs name cached ImageNet files as `~/.cache/...`.
        backbone_weights=os.path.expanduser(m.backbone_weights) or None,
        backbone_kwargs=m.backbone_kwargs,
        head_kwargs=m.head_kwargs,
        alpha=m.alpha,
        beta=m.beta,
        dtype=m.dtype or None,
    )


def load_initial_weights(model, path):
    """Loads `train.init_weights` (a `.weights.h5` or `.keras` file of the same model)."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"train.init_weights {path!r} does not exist; point it at the .weights.h5 (or "
            ".keras) file of the run to start from, e.g. RUN/checkpoints/last.weights.h5."
        )
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"train.init_weights {path!r} must be a .weights.h5 or .keras file of the same "
            "SANet (same backbone, output stride, heads and classes)."
        )
    try:
        model.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"Could not load train.init_weights {path!r} into this run's SANet ({error}). It "
            "must come from a run with the same [model] section and dataset classes."
        ) from error


def build_metrics(model, crop_size):
    """Creates the compiled metrics' state on a dummy batch, before `fit`.

    Otherwise `fit` reads a batch of the training data to build them, which
    starts an extra pass over the data set; the augmentation of the pass
    that then trains would depend on that, and a resumed run could not
    replay the data stream exactly.
    """
    images = np.zeros((1, *crop_size, 3), "float32")
    masks = np.zeros((1, *crop_size), "uint8")
    model.compute_metrics(images, masks, model(images, training=False))
    model.reset_metrics()


def train(config: Config, verbose="auto", callbacks=None):
    """Trains as `config` says; started again with the same config, it resumes.

    Everything lands in `config.train.output_dir`: `config.json` (the resolved
    config), `backup/` (the resume checkpoint, written every epoch: weights,
    optimizer state, epoch, random-generator state), `checkpoints/last.weights.h5`
    and `checkpoints/best.weights.h5` (best validation mIoU), `log.csv` (one
    row per epoch of the whole run), and at the end `model.keras` (loads with
    `safe_mode=True`) and `history.json` (every epoch, the optimizer's step
    count, the replica count).

    A run killed at any point and started again with the same config
    continues from the last finished epoch: no epoch is lost or repeated, the
    learning-rate schedule continues, and with `train.exact_resume` (default)
    the data stream skips what the finished epochs consumed, so the result is
    the one of an uninterrupted run. A finished run started again does
    nothing and returns the saved model.

    Args:
        config: a `Config` (see `load_config`).
        verbose: `fit` verbosity (`"auto"`, 0, 1, 2).
        callbacks: extra Keras callbacks for `fit`.

    Returns:
        The trained model.

    Example:
    >>> model = train(load_config("configs/camvid_resnet18_os16.toml", ["train.epochs=2"]))
    """
    t = config.train
    # Fail before reading any data when the backend cannot run the distribution.
    distribution = resolve_distribution(t.distribution)
    check_distribution(distribution)
    out = t.output_dir
    backup_dir = os.path.join(out, "backup")
    model_path = os.path.join(out, "model.keras")
    history_path = os.path.join(out, "history.json")
    log_path = os.path.join(out, "log.csv")
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    config_path = os.path.join(out, "config.json")
    resolved = config.to_dict()
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        if previous.get("model") != resolved["model"]:
            raise ValueError(
                f"{out} holds a run with another model config ({previous.get('model')}). "
                "Resume with the same [model] section, or set train.output_dir to a new folder."
            )

    epochs_done = read_backup_epoch(backup_dir)
    if epochs_done and os.path.exists(config_path):
        before = previous.get("train", {})
        changed = [f"{k}: {before.get(k)!r} -> {getattr(t, k)!r}" for k in SCHEDULE_KEYS
                   if before.get(k) != getattr(t, k)]
        if changed:
            warnings.warn(
                f"Resuming {out} after epoch {epochs_done} with other train settings "
                f"({', '.join(changed)}): the learning-rate schedule or the data order "
                "changes from here on. Use a new train.output_dir to start afresh.",
                stacklevel=2,
            )
    if epochs_done >= t.epochs and os.path.exists(model_path) and os.path.exists(history_path):
        with open(history_path) as f:
            finished = json.load(f)
        if t.precise_bn_images and "precise_bn" not in finished:
            _, val_ds, *_ = build_datasets(config)
            return _recalibrate_finished_run(config, out, val_ds, verbose)
        print(f"{out} already finished {epochs_done} epoch(s) (train.epochs={t.epochs}); "
              "nothing to do. Raise train.epochs or use a new train.output_dir to train more.")
        return keras.saving.load_model(model_path, safe_mode=True)
    with open(config_path, "w") as f:
        json.dump(resolved, f, indent=2)
    best_so_far = [
        row[BEST_METRIC]
        for row in read_log(log_path)
        if row["epoch"] < epochs_done and row.get(BEST_METRIC) is not None
    ]

    keras.utils.set_random_seed(t.seed)
    with distribution_scope(distribution):
        replicas = replica_count(distribution)
        if t.batch_size % replicas:
            raise ValueError(
                f"train.batch_size={t.batch_size} does not split over {replicas} replicas; use "
                f"a multiple of {replicas}."
            )
        train_ds, val_ds, train_count, num_classes, class_names = build_datasets(
            config, replicas
        )
        steps_per_epoch = t.steps_per_epoch or max(1, train_count // t.batch_size)
        if epochs_done and t.exact_resume:
            # Replays the data stream to where the backup stopped (reads the skipped
            # batches once more), so the resumed run sees what an uninterrupted one would.
            train_ds = train_ds.skip(epochs_done * steps_per_epoch)

        model = build_model(config, num_classes)
        model.build((None, None, None, 3))
        if t.init_weights and not epochs_done:
            load_initial_weights(model, t.init_weights)
        learning_rate = t.effective_learning_rate()
        optimizer = sgd_poly(
            learning_rate=learning_rate,
            total_steps=steps_per_epoch * t.epochs,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            power=t.poly_power,
            head_lr_multiplier=t.head_lr_multiplier,
        )
        model.compile(optimizer=optimizer, jit_compile=t.jit_compile)
        build_metrics(model, config.data.crop_size)

        fit_callbacks = [
            # Before the backup: an epoch whose backup exists always has its row.
            EpochLog(log_path, epochs_done=epochs_done),
            keras.callbacks.ModelCheckpoint(
                os.path.join(out, "checkpoints", "last.weights.h5"), save_weights_only=True
            ),
        ]
        if val_ds is not None:
            fit_callbacks.append(
                BestCheckpoint(
                    os.path.join(out, "checkpoints", "best.weights.h5"),
                    monitor=BEST_METRIC,
                    # A resumed run only replaces the best of the epochs before it.
                    best=max(best_so_far) if best_so_far else None,
                )
            )
        precise_bn = None
        if t.precise_bn_images:
            precise_bn = PreciseBatchNorm(
                build_precise_bn_images(config), verbose=int(verbose != 0)
            )
            fit_callbacks.append(precise_bn)
        fit_callbacks.append(TrainingBackup(backup_dir, seed=t.seed))
        fit_callbacks.extend(callbacks or [])
        with synchronized_batch_norm(model, distribution == "mirrored"):
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=t.epochs,
                steps_per_epoch=steps_per_epoch,
                shuffle=False,  # tf.data shuffles (seeded, replayable on resume)
                callbacks=fit_callbacks,
                validation_freq=t.validate_every,
                verbose=verbose,
            )
        model.save(model_path)

    rows = read_log(log_path)
    with open(history_path, "w") as f:
        json.dump(
            {
                "history": history_from_log(rows),
                "logged_epochs": [row["epoch"] for row in rows],
                "epochs": t.epochs,
                "steps_per_epoch": steps_per_epoch,
                "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                "resumed_from_epoch": epochs_done,
                "class_names": class_names,
                "replicas": replicas,
                "distribution": distribution,
                "learning_rate": learning_rate,
                **({"precise_bn": {
                    "images": t.precise_bn_images,
                    "batch_size": t.precise_bn_batch_size,
                    "recalibrations": precise_bn.recalibrations,
                }} if precise_bn else {}),
            },
            f,
            indent=2,
        )
    return model
