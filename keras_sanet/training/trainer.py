"""Training a SANet from a `Config`: datasets, model, paper optimizer, fit, resume."""

import contextlib
import json
import os

import keras

from keras_sanet.training.config import Config
from keras_sanet.training.optimizers import sgd_poly


def distribution_scope(kind):
    """Switches on multi-device training; must run before the model is built.

    `"mirrored"`: `tf.distribute.MirroredStrategy` over the local devices
    (TensorFlow backend). `"data_parallel"`: `keras.distribution.DataParallel`
    over the local devices (JAX backend). Keras 3 has no distribution for
    PyTorch: train it on one device.
    """
    backend = keras.backend.backend()
    if kind == "none":
        return contextlib.nullcontext()
    if kind == "mirrored":
        if backend != "tensorflow":
            raise ValueError(
                f"distribution='mirrored' needs KERAS_BACKEND=tensorflow (it is {backend!r}). "
                "On JAX use distribution='data_parallel'; Keras has no multi-device "
                "training for PyTorch, use distribution='none' there."
            )
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope()
    if kind == "data_parallel":
        if backend != "jax":
            raise ValueError(
                f"distribution='data_parallel' needs KERAS_BACKEND=jax (it is {backend!r}). "
                "On TensorFlow use distribution='mirrored'; on PyTorch use 'none'."
            )
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext()
    raise ValueError(f"Unknown distribution {kind!r}; use 'none', 'mirrored' or 'data_parallel'.")


def replica_count(kind):
    if kind == "mirrored":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    if kind == "data_parallel":
        return len(keras.distribution.list_devices())
    return 1


@contextlib.contextmanager
def synchronized_batch_norm(model, enabled):
    """Batch statistics over all replicas while training (TensorFlow only).

    Set for the duration of `fit` only, so that a saved model stays loadable
    on backends where `synchronized=True` is refused.
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


def build_datasets(config: Config):
    """Returns `(train_ds, val_ds, train_pairs_count, num_classes, class_names)`."""
    from keras_sanet import data

    d, t = config.data, config.train
    common = dict(
        crop_size=tuple(d.crop_size),
        base_size=d.base_size or None,
        scale_range=tuple(d.scale_range),
        flip=d.flip,
    )
    if d.dataset == "camvid":
        train_count = len(data.camvid_pairs(d.root, "train"))
        train = data.camvid_dataset(
            d.root, "train", batch_size=t.batch_size, seed=t.seed, repeat=True,
            drop_remainder=True, **common,
        )
        val = data.camvid_dataset(d.root, "val", batch_size=d.val_batch_size)
        info = data.CAMVID_INFO
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
            val_pairs, d.num_classes, label_map=label_map, batch_size=d.val_batch_size
        )
    names = [f"class_{i}" for i in range(d.num_classes)]
    return train, val, len(train_pairs), d.num_classes, names


def build_model(config: Config, num_classes):
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
        backbone_weights=m.backbone_weights or None,
        backbone_kwargs=m.backbone_kwargs,
        head_kwargs=m.head_kwargs,
        alpha=m.alpha,
        beta=m.beta,
        dtype=m.dtype or None,
    )


def train(config: Config, verbose="auto"):
    """Trains as `config` says; started again with the same config, it resumes.

    Everything lands in `config.train.output_dir`: `config.json` (the resolved
    config), `backup/` (the resume checkpoint, written every epoch: weights,
    optimizer state and epoch), `checkpoints/last.weights.h5` and
    `checkpoints/best.weights.h5` (best validation mIoU), `log.csv`, and at
    the end `model.keras` (loads with `safe_mode=True`) and `history.json`.

    Returns:
        The trained model.
    """
    t = config.train
    keras.utils.set_random_seed(t.seed)
    out = t.output_dir
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
    with open(config_path, "w") as f:
        json.dump(resolved, f, indent=2)

    train_ds, val_ds, train_count, num_classes, class_names = build_datasets(config)
    steps_per_epoch = t.steps_per_epoch or max(1, train_count // t.batch_size)

    with distribution_scope(t.distribution):
        model = build_model(config, num_classes)
        model.build((None, None, None, 3))
        optimizer = sgd_poly(
            learning_rate=t.learning_rate,
            total_steps=steps_per_epoch * t.epochs,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            power=t.poly_power,
            head_lr_multiplier=t.head_lr_multiplier,
        )
        model.compile(optimizer=optimizer, jit_compile=t.jit_compile)

    callbacks = [
        keras.callbacks.BackupAndRestore(
            os.path.join(out, "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        keras.callbacks.ModelCheckpoint(
            os.path.join(out, "checkpoints", "last.weights.h5"), save_weights_only=True
        ),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv"), append=True),
    ]
    if val_ds is not None:
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(out, "checkpoints", "best.weights.h5"),
                save_weights_only=True,
                monitor="val_mean_iou",
                mode="max",
                save_best_only=True,
            )
        )
    with synchronized_batch_norm(model, t.distribution == "mirrored"):
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=t.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            validation_freq=t.validate_every,
            verbose=verbose,
        )
    model.save(os.path.join(out, "model.keras"))
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(
            {
                "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
                "epochs": t.epochs,
                "steps_per_epoch": steps_per_epoch,
                "class_names": class_names,
                "replicas": replica_count(t.distribution),
            },
            f,
            indent=2,
        )
    return model

