"""Streaming segmentation metrics against a NumPy confusion matrix."""

import json

import keras
import numpy as np
import pytest

from keras_sanet.losses import SANetLoss
from keras_sanet.metrics import MeanIoU
from keras_sanet.metrics import PixelAccuracy
from tests.helpers import run_python
from tests.helpers import to_numpy

K = 4
IGNORE = 255


def np_confusion(masks, predictions, num_classes=K, ignore_index=IGNORE):
    labels = masks.reshape(-1).astype("int64")
    predictions = predictions.reshape(-1).astype("int64")
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    pairs = labels[valid] * num_classes + predictions[valid]
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, -1)


def np_scores(cm):
    """(mean IoU over present classes, pixel accuracy, per-class IoU)."""
    cm = cm.astype("float64")
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, np.diag(cm) / union, np.nan)
    return np.nanmean(iou), np.trace(cm) / cm.sum(), iou


def make_batches(num_batches=3, batch=2, height=5, width=6, seed=0):
    """Random masks with ~20% ignored pixels, and logits that are often right."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(num_batches):
        masks = rng.integers(0, K, size=(batch, height, width))
        logits = rng.normal(size=(batch, height, width, K))
        logits += 2.0 * np.eye(K)[masks]  # mostly correct predictions
        masks[rng.random(masks.shape) < 0.2] = IGNORE
        batches.append((masks.astype("uint8"), logits.astype("float32")))
    return batches


@pytest.mark.parametrize("mask_layout", ["nhw", "nhw1"])
@pytest.mark.parametrize("sparse_y_pred", [False, True])
@pytest.mark.parametrize("mask_dtype", ["uint8", "int32"])
def test_streaming_equals_one_shot_numpy_reference(
    mask_layout, sparse_y_pred, mask_dtype
):
    batches = make_batches()
    mean_iou = MeanIoU(K, sparse_y_pred=sparse_y_pred)
    pixel_accuracy = PixelAccuracy(K, sparse_y_pred=sparse_y_pred)
    for masks, logits in batches:
        masks = masks.astype(mask_dtype)
        if mask_layout == "nhw1":
            masks = masks[..., None]
        predictions = logits.argmax(-1).astype("int32") if sparse_y_pred else logits
        mean_iou.update_state(masks, predictions)
        pixel_accuracy.update_state(masks, predictions)

    all_masks = np.concatenate([m for m, _ in batches])
    all_predictions = np.concatenate([lg.argmax(-1) for _, lg in batches])
    cm = np_confusion(all_masks, all_predictions)
    expected_miou, expected_pacc, expected_iou = np_scores(cm)
    np.testing.assert_array_equal(mean_iou.confusion_matrix(), cm)
    np.testing.assert_array_equal(pixel_accuracy.confusion_matrix(), cm)
    np.testing.assert_allclose(to_numpy(mean_iou.result()), expected_miou, rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(pixel_accuracy.result()), expected_pacc, rtol=1e-6
    )
    np.testing.assert_allclose(mean_iou.per_class_iou(), expected_iou, rtol=1e-12)

    # The whole split in one batch gives the same numbers.
    one_shot = MeanIoU(K)
    one_shot.update_state(all_masks, np.concatenate([lg for _, lg in batches]))
    np.testing.assert_array_equal(one_shot.confusion_matrix(), cm)
    np.testing.assert_allclose(
        to_numpy(one_shot.result()), to_numpy(mean_iou.result()), rtol=1e-6
    )


def test_streaming_is_not_an_average_of_batch_scores():
    # Batch 1: 4 pixels of class 0, all right. Batch 2: one pixel of class 1,
    # predicted 0. Whole split: IoU_0 = 4/5, IoU_1 = 0, mIoU 0.4; the mean of
    # the two per-batch mIoUs would be (1 + 0) / 2 = 0.5.
    eye = np.eye(2, dtype="float32")
    metric = MeanIoU(2)
    metric.update_state(np.zeros((1, 2, 2), "uint8"), eye[np.zeros((1, 2, 2), int)])
    metric.update_state(np.ones((1, 1, 1), "uint8"), eye[np.zeros((1, 1, 1), int)])
    np.testing.assert_allclose(to_numpy(metric.result()), 0.4, rtol=1e-6)
    np.testing.assert_allclose(metric.per_class_iou(), [0.8, 0.0])


def test_ignored_pixels_are_left_out():
    masks, logits = make_batches(num_batches=1)[0]
    predictions = logits.argmax(-1)
    mean_iou, pixel_accuracy = MeanIoU(K), PixelAccuracy(K)
    for metric in (mean_iou, pixel_accuracy):
        metric.update_state(masks, logits)
        # A fully ignored batch, with confident logits, changes nothing.
        metric.update_state(np.full_like(masks, IGNORE), logits * 100)
    assert mean_iou.confusion_matrix().sum() == np.sum(masks != IGNORE)
    correct = np.sum((predictions == masks) & (masks != IGNORE))
    np.testing.assert_allclose(
        to_numpy(pixel_accuracy.result()), correct / np.sum(masks != IGNORE), rtol=1e-6
    )


def test_custom_ignore_index_and_out_of_range_labels():
    # CamVid style: a class id inside 0..K-1 can be the ignored one; labels
    # >= K (an unmapped 255 here) never reach the matrix either.
    masks, logits = make_batches(num_batches=1)[0]
    metric = MeanIoU(K, ignore_index=3)
    metric.update_state(masks, logits)
    expected = np_confusion(masks, logits.argmax(-1), ignore_index=3)
    assert expected[3].sum() == 0
    np.testing.assert_array_equal(metric.confusion_matrix(), expected)


def test_weights_and_out_of_range_ids_count_as_in_keras_mean_iou():
    # Our update replaces Keras' (a per-pixel Python loop on PyTorch): same matrix.
    rng = np.random.default_rng(4)
    masks = rng.integers(0, K + 2, size=(2, 7, 5))
    masks[0, 0, :3] = IGNORE
    predictions = rng.integers(-1, K + 1, size=masks.shape)  # ids outside 0..K-1 too
    weights = rng.integers(0, 3, size=masks.shape)
    ours = MeanIoU(K, sparse_y_pred=True)
    keras_metric = keras.metrics.MeanIoU(
        K, ignore_class=IGNORE, sparse_y_true=True, sparse_y_pred=True, dtype="int32"
    )
    for metric in (ours, keras_metric):
        metric.update_state(masks, predictions, sample_weight=weights)
    np.testing.assert_array_equal(
        ours.confusion_matrix(), to_numpy(keras_metric.total_cm).astype("int64")
    )


def test_float_weights_in_an_integer_matrix_warn():
    masks, logits = make_batches(num_batches=1)[0]
    with pytest.warns(UserWarning, match="dropping fractions"):
        MeanIoU(K).update_state(masks, logits, sample_weight=np.full(masks.shape, 0.5))


def test_one_batch_counts_past_float32_precision():
    # 2**24 + 4096 pixels of one (label, prediction) pair: float32 sums stop at 2**24.
    masks = np.ones((1, 4097, 4096), "uint8")
    metric = MeanIoU(K, sparse_y_pred=True)
    metric.update_state(masks, masks)
    assert metric.confusion_matrix()[1, 1] == 4097 * 4096


def test_class_absent_from_labels_and_predictions_does_not_count():
    masks, logits = make_batches(num_batches=1)[0]
    masks = np.where(masks == 3, 0, masks).astype("uint8")
    logits[..., 3] = -100.0  # never predicted either
    metric = MeanIoU(K)
    metric.update_state(masks, logits)
    iou = metric.per_class_iou()
    assert np.isnan(iou[3]) and not np.isnan(iou[:3]).any()
    np.testing.assert_allclose(to_numpy(metric.result()), np.mean(iou[:3]), rtol=1e-6)


def test_class_predicted_but_absent_from_labels_counts_as_zero():
    masks = np.zeros((1, 2, 2), "uint8")
    predictions = np.array([[[0, 0], [0, 1]]], "int32")
    metric = MeanIoU(2, sparse_y_pred=True)
    metric.update_state(masks, predictions)
    np.testing.assert_allclose(metric.per_class_iou(), [0.75, 0.0])
    np.testing.assert_allclose(to_numpy(metric.result()), 0.375, rtol=1e-6)


def test_empty_metric_and_reset_state():
    mean_iou, pixel_accuracy = MeanIoU(K), PixelAccuracy(K)
    assert float(to_numpy(mean_iou.result())) == 0.0
    assert float(to_numpy(pixel_accuracy.result())) == 0.0
    masks, logits = make_batches(num_batches=1)[0]
    for metric in (mean_iou, pixel_accuracy):
        metric.update_state(masks, logits)
        assert metric.confusion_matrix().sum() > 0
        metric.reset_state()
        np.testing.assert_array_equal(metric.confusion_matrix(), np.zeros((K, K)))
        assert float(to_numpy(metric.result())) == 0.0
    assert np.isnan(mean_iou.per_class_iou()).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits(dtype):
    masks, logits = make_batches(num_batches=1)[0]
    low = keras.ops.cast(logits, dtype)
    metric = PixelAccuracy(K)
    metric.update_state(masks, low)
    rounded = to_numpy(keras.ops.cast(low, "float32"))
    np.testing.assert_array_equal(
        metric.confusion_matrix(), np_confusion(masks, rounded.argmax(-1))
    )


def test_a_dict_of_model_outputs_uses_its_logits():
    masks, logits = make_batches(num_batches=1)[0]
    metric = MeanIoU(K)
    metric.update_state(masks, {"logits": logits, "se_logits": logits[:, 0, 0]})
    np.testing.assert_array_equal(
        metric.confusion_matrix(), np_confusion(masks, logits.argmax(-1))
    )


@pytest.mark.parametrize("metric_class", [MeanIoU, PixelAccuracy])
def test_serialization_round_trip(metric_class):
    metric = metric_class(K, ignore_index=11, sparse_y_pred=True, name="val_score")
    config = metric.get_config()
    assert config == {
        "num_classes": K,
        "ignore_index": 11,
        "sparse_y_pred": True,
        "name": "val_score",
        "dtype": None,
    }
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(metric)))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is metric_class and restored.get_config() == config
    masks, logits = make_batches(num_batches=1)[0]
    for m in (metric, restored):
        m.update_state(masks, logits.argmax(-1))
    np.testing.assert_allclose(
        to_numpy(restored.result()), to_numpy(metric.result()), rtol=1e-6
    )


@pytest.mark.parametrize(
    "masks, logits, match",
    [
        (
            np.zeros((2, 5, 6), "uint8"),
            np.zeros((2, 5, 7, K), "float32"),
            "do not match",
        ),
        (
            np.zeros((2, 5, 6), "uint8"),
            np.zeros((3, 5, 6, K), "float32"),
            "do not match",
        ),
        (
            np.zeros((2, 5, 6), "uint8"),
            np.zeros((2, 5, 6, K + 1), "float32"),
            "classes",
        ),
        (
            np.zeros((5, 6), "uint8"),
            np.zeros((2, 5, 6, K), "float32"),
            "masks of shape",
        ),
        (
            np.zeros((2, 5, 6, 2), "uint8"),
            np.zeros((2, 5, 6, K), "float32"),
            "masks of shape",
        ),
        (
            np.zeros((2, 5, 6), "uint8"),
            np.zeros((2, 5, 6), "float32"),
            "sparse_y_pred=True",
        ),
    ],
)
def test_bad_shapes_raise(masks, logits, match):
    with pytest.raises(ValueError, match=match):
        MeanIoU(K).update_state(masks, logits)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_classes"):
        MeanIoU(0)
    with pytest.raises(TypeError, match="ignore_index"):
        PixelAccuracy(K, ignore_index=255.0)


def _conv_model(seed=0):
    inputs = keras.Input((5, 6, 3))
    conv = keras.layers.Conv2D(K, 1)
    model = keras.Model(inputs, conv(inputs))
    rng = np.random.default_rng(seed)
    conv.set_weights([rng.normal(size=(1, 1, 3, K)), rng.normal(size=(K,))])
    return model


def _split(num_images=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_images, 5, 6, 3)).astype("float32")
    masks = rng.integers(0, K, size=(num_images, 5, 6))
    masks[rng.random(masks.shape) < 0.2] = IGNORE
    return images, masks.astype("uint8")


# The never-trained optimizer has no variables to restore; that is expected.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_compiled_model_evaluate_matches_numpy(tmp_path):
    images, masks = _split()
    model = _conv_model()
    model.compile(loss=SANetLoss(), metrics=[MeanIoU(K), PixelAccuracy(K)])
    predictions = to_numpy(model.predict(images, verbose=0)).argmax(-1)
    expected_miou, expected_pacc, _ = np_scores(np_confusion(masks, predictions))

    results = model.evaluate(images, masks, batch_size=2, verbose=0, return_dict=True)
    np.testing.assert_allclose(results["mean_iou"], expected_miou, rtol=1e-5)
    np.testing.assert_allclose(results["pixel_accuracy"], expected_pacc, rtol=1e-5)

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    results = restored.evaluate(
        images, masks[..., None], batch_size=4, verbose=0, return_dict=True
    )
    np.testing.assert_allclose(results["mean_iou"], expected_miou, rtol=1e-5)
    np.testing.assert_allclose(results["pixel_accuracy"], expected_pacc, rtol=1e-5)


_REPLICA_CODE = """
import json
import numpy as np
import tensorflow as tf

# Two logical CPUs, configured before TensorFlow initialises its devices.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
import keras
from keras_sanet.losses import SANetLoss
from keras_sanet.metrics import MeanIoU, PixelAccuracy
from tests.test_metrics import K, _conv_model, _split, np_confusion, np_scores

# 13 images in batches of 4: the last batch gives one replica a single image
# and the other none.
images, masks = _split(num_images=13, seed=3)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = _conv_model(seed=3)
    mean_iou, pixel_accuracy = MeanIoU(K), PixelAccuracy(K)
    model.compile(loss=SANetLoss(), metrics=[mean_iou, pixel_accuracy])
dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4)
results = model.evaluate(dataset, verbose=0, return_dict=True)
predictions = np.asarray(model.predict(images, verbose=0)).argmax(-1)
cm = np_confusion(masks, predictions)
expected_miou, expected_pacc, _ = np_scores(cm)
print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "mean_iou": float(results["mean_iou"]),
    "pixel_accuracy": float(results["pixel_accuracy"]),
    "confusion_matrix": mean_iou.confusion_matrix().tolist(),
    "expected_cm": cm.tolist(),
    "expected_mean_iou": float(expected_miou),
    "expected_pixel_accuracy": float(expected_pacc),
}))
"""


def test_mirrored_strategy_replicas_sum_into_one_matrix():
    # Each replica scores half of every batch; the result must be the split's.
    out = run_python(_REPLICA_CODE, "tensorflow")
    assert out["replicas"] == 2
    assert out["confusion_matrix"] == out["expected_cm"]
    np.testing.assert_allclose(out["mean_iou"], out["expected_mean_iou"], rtol=1e-5)
    np.testing.assert_allclose(
        out["pixel_accuracy"], out["expected_pixel_accuracy"], rtol=1e-5
    )


_JAX_DATA_PARALLEL_CODE = """
import json
import jax
import keras
import numpy as np
from keras_sanet.losses import SANetLoss
from keras_sanet.metrics import MeanIoU, PixelAccuracy
from tests.test_metrics import K, _conv_model, _split, np_confusion, np_scores

keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=jax.devices())
)
images, masks = _split(num_images=12, seed=4)
model = _conv_model(seed=4)
mean_iou = MeanIoU(K)
model.compile(loss=SANetLoss(), metrics=[mean_iou, PixelAccuracy(K)])
results = model.evaluate(images, masks, batch_size=4, verbose=0, return_dict=True)
predictions = np.asarray(model.predict(images, batch_size=4, verbose=0)).argmax(-1)
cm = np_confusion(masks, predictions)
expected_miou, expected_pacc, _ = np_scores(cm)
print("RESULT " + json.dumps({
    "devices": len(jax.devices()),
    "mean_iou": float(results["mean_iou"]),
    "pixel_accuracy": float(results["pixel_accuracy"]),
    "confusion_matrix": mean_iou.confusion_matrix().tolist(),
    "expected_cm": cm.tolist(),
    "expected_mean_iou": float(expected_miou),
    "expected_pixel_accuracy": float(expected_pacc),
}))
"""


def test_jax_data_parallel_counts_every_device():
    # keras.distribution shards each batch over two (forced) host devices.
    out = run_python(
        _JAX_DATA_PARALLEL_CODE,
        "jax",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert out["devices"] == 2
    assert out["confusion_matrix"] == out["expected_cm"]
    np.testing.assert_allclose(out["mean_iou"], out["expected_mean_iou"], rtol=1e-5)
    np.testing.assert_allclose(
        out["pixel_accuracy"], out["expected_pixel_accuracy"], rtol=1e-5
    )
