"""SANet losses against straightforward NumPy references."""

import json

import keras
import numpy as np
import pytest

from keras_sanet.losses import SANetLoss
from keras_sanet.losses import categorical_loss
from keras_sanet.losses import categorical_targets
from keras_sanet.losses import segmentation_cross_entropy
from tests.helpers import to_numpy

NUM_CLASSES = 3
IGNORE = 255
WEIGHTS = (1.0, 2.5, 0.5)

# Two 3x4 label maps; image 1 has no class 2 and several ignored pixels.
MASK = np.array(
    [
        [[0, 0, 1, 255], [0, 1, 1, 2], [255, 2, 2, 2]],
        [[1, 1, 1, 1], [255, 255, 1, 1], [0, 0, 1, 1]],
    ],
    dtype="uint8",
)


def _example_logits(seed):
    logits = np.random.default_rng(seed).normal(0.0, 1.5, (2, 3, 4, NUM_CLASSES))
    # A few confident pixels, right and wrong, so the terms differ clearly.
    logits[0, 0, 0] = [8.0, -4.0, -4.0]
    logits[0, 2, 3] = [6.0, -2.0, -3.0]
    logits[1, 0, 0] = [-5.0, 7.0, 0.0]
    logits[1, 1, 0] = [30.0, -30.0, 0.0]  # an ignored pixel: must not count
    return logits.astype("float32")


LOGITS = _example_logits(1)
AUX_LOGITS = _example_logits(2)
SE_LOGITS = np.array([[1.5, -0.5, 0.3], [-2.0, 2.5, 0.1]], dtype="float32")


def np_cross_entropy(mask, logits, ignore_index=IGNORE, class_weights=None):
    labels = mask.reshape(-1).astype("int64")
    logits = logits.reshape(-1, logits.shape[-1]).astype("float64")
    k = logits.shape[-1]
    valid = (labels >= 0) & (labels < k) & (labels != ignore_index)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    total, weight_sum = 0.0, 0.0
    for label, row, ok in zip(labels, log_probs, valid):
        if ok:
            weight = 1.0 if class_weights is None else class_weights[label]
            total += -weight * row[label]
            weight_sum += weight
    return total / weight_sum if weight_sum > 0 else 0.0


def np_cross_entropy_grad(mask, logits, ignore_index=IGNORE, class_weights=None):
    labels = mask.reshape(-1).astype("int64")
    flat = logits.reshape(-1, logits.shape[-1]).astype("float64")
    k = flat.shape[-1]
    valid = (labels >= 0) & (labels < k) & (labels != ignore_index)
    probs = np.exp(flat) / np.exp(flat).sum(-1, keepdims=True)
    one_hot = np.eye(k)[np.where(valid, labels, 0)]
    weights = (
        np.ones(len(labels))
        if class_weights is None
        else np.asarray(class_weights)[np.where(valid, labels, 0)]
    )
    weights = np.where(valid, weights, 0.0)
    denominator = weights.sum() if weights.sum() > 0 else 1.0
    grad = weights[:, None] * (probs - one_hot) / denominator
    return grad.reshape(logits.shape)


def np_targets(mask, k, ignore_index=IGNORE):
    targets = np.zeros((mask.shape[0], k))
    for i, image in enumerate(mask):
        for label in np.unique(image):
            if label != ignore_index and 0 <= label < k:
                targets[i, label] = 1.0
    return targets


def np_categorical(mask, se_logits, ignore_index=IGNORE):
    targets = np_targets(mask, se_logits.shape[-1], ignore_index)
    probs = 1.0 / (1.0 + np.exp(-se_logits.astype("float64")))
    return np.mean(-targets * np.log(probs) - (1 - targets) * np.log(1 - probs))


def _gradient(fn, x):
    """d fn(x) / dx with the current backend's autodiff, as NumPy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(variable)
        return tape.gradient(value, variable).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(fn)(jax.numpy.asarray(x)))
    import torch

    tensor = torch.tensor(x, requires_grad=True)
    fn(tensor).backward()
    return tensor.grad.numpy()


@pytest.mark.parametrize("class_weights", [None, WEIGHTS])
@pytest.mark.parametrize("mask_layout", ["nhw", "nhw1"])
@pytest.mark.parametrize("mask_dtype", ["uint8", "int32", "int64"])
def test_segmentation_cross_entropy_matches_numpy(
    class_weights, mask_layout, mask_dtype
):
    mask = MASK.astype(mask_dtype)
    if mask_layout == "nhw1":
        mask = mask[..., None]
    value = segmentation_cross_entropy(mask, LOGITS, class_weights=class_weights)
    expected = np_cross_entropy(MASK, LOGITS, class_weights=class_weights)
    assert to_numpy(value).shape == ()
    np.testing.assert_allclose(to_numpy(value), expected, rtol=1e-5)


def test_segmentation_cross_entropy_uniform_logits_is_log_k():
    value = segmentation_cross_entropy(MASK, np.zeros_like(LOGITS))
    np.testing.assert_allclose(to_numpy(value), np.log(NUM_CLASSES), rtol=1e-6)


def test_class_weights_give_the_weighted_mean():
    # Weighting one class only picks out that class's mean cross-entropy.
    only_class_1 = (0.0, 1.0, 0.0)
    value = segmentation_cross_entropy(MASK, LOGITS, class_weights=only_class_1)
    class_1 = np.where(MASK == 1, MASK, IGNORE).astype("uint8")
    np.testing.assert_allclose(
        to_numpy(value), np_cross_entropy(class_1, LOGITS), rtol=1e-5
    )


def test_ignored_pixel_logits_do_not_matter():
    changed = LOGITS.copy()
    ignored = MASK == IGNORE
    noise = np.random.default_rng(5).normal(0, 50, (ignored.sum(), NUM_CLASSES))
    changed[ignored] = noise
    np.testing.assert_allclose(
        to_numpy(segmentation_cross_entropy(MASK, changed)),
        to_numpy(segmentation_cross_entropy(MASK, LOGITS)),
        rtol=1e-6,
    )


def test_out_of_range_labels_count_as_ignored():
    # Data readers reject such masks; in a graph the loss can only skip them.
    bad = MASK.copy()
    bad[0, 0, 0] = 7
    reference = MASK.copy()
    reference[0, 0, 0] = IGNORE
    np.testing.assert_allclose(
        to_numpy(segmentation_cross_entropy(bad, LOGITS)),
        np_cross_entropy(reference, LOGITS),
        rtol=1e-5,
    )


def test_categorical_targets_are_the_present_classes():
    targets = to_numpy(categorical_targets(MASK, NUM_CLASSES))
    np.testing.assert_array_equal(targets, [[1, 1, 1], [1, 1, 0]])
    # Ignored pixels never mark a class as present, whatever the ignore index.
    np.testing.assert_array_equal(
        to_numpy(categorical_targets(MASK, NUM_CLASSES, ignore_index=2)),
        [[1, 1, 0], [1, 1, 0]],
    )


def test_categorical_loss_matches_numpy():
    value = categorical_loss(MASK[..., None], SE_LOGITS)
    np.testing.assert_allclose(
        to_numpy(value), np_categorical(MASK, SE_LOGITS), rtol=1e-5
    )


def test_categorical_loss_is_stable_for_large_logits():
    se_logits = np.array([[80.0, -80.0, 80.0], [-80.0, 80.0, -80.0]], "float32")
    value = to_numpy(categorical_loss(MASK, se_logits))
    # Targets [[1,1,1],[1,1,0]]: two entries are 80 off, the rest ~0.
    np.testing.assert_allclose(value, 2 * 80.0 / 6, rtol=1e-5)


@pytest.mark.parametrize("class_weights", [None, WEIGHTS])
@pytest.mark.parametrize(
    "present", [("se_logits", "aux_logits"), ("se_logits",), ("aux_logits",), ()]
)
def test_sanet_loss_total_and_terms(class_weights, present):
    alpha, beta = 0.3, 0.7
    loss_fn = SANetLoss(alpha=alpha, beta=beta, class_weights=class_weights)
    outputs = {"logits": LOGITS}
    available = {"se_logits": SE_LOGITS, "aux_logits": AUX_LOGITS}
    outputs.update({key: available[key] for key in present})

    seg = np_cross_entropy(MASK, LOGITS, class_weights=class_weights)
    cat = np_categorical(MASK, SE_LOGITS)
    aux = np_cross_entropy(MASK, AUX_LOGITS, class_weights=class_weights)
    expected_terms = {"seg": seg}
    expected_total = seg
    if "se_logits" in present:
        expected_terms["cat"] = cat
        expected_total += alpha * cat
    if "aux_logits" in present:
        expected_terms["aux"] = aux
        expected_total += beta * aux

    terms = loss_fn.terms(MASK, outputs)
    assert sorted(terms) == sorted(expected_terms)
    for key, expected in expected_terms.items():
        np.testing.assert_allclose(to_numpy(terms[key]), expected, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(loss_fn(MASK, outputs)), expected_total, rtol=1e-5
    )


def test_sanet_loss_of_bare_logits_is_the_segmentation_term():
    value = SANetLoss()(MASK[..., None], LOGITS)
    np.testing.assert_allclose(
        to_numpy(value), np_cross_entropy(MASK, LOGITS), rtol=1e-5
    )


def test_sanet_loss_defaults_are_the_papers():
    loss_fn = SANetLoss()
    assert (loss_fn.alpha, loss_fn.beta, loss_fn.ignore_index) == (0.2, 0.8, 255)
    outputs = {"logits": LOGITS, "se_logits": SE_LOGITS, "aux_logits": AUX_LOGITS}
    expected = (
        np_cross_entropy(MASK, LOGITS)
        + 0.2 * np_categorical(MASK, SE_LOGITS)
        + 0.8 * np_cross_entropy(MASK, AUX_LOGITS)
    )
    np.testing.assert_allclose(to_numpy(loss_fn(MASK, outputs)), expected, rtol=1e-5)


def test_all_ignored_batch_gives_zero_with_finite_gradient():
    mask = np.full_like(MASK, IGNORE)
    outputs = {"logits": LOGITS, "se_logits": SE_LOGITS, "aux_logits": AUX_LOGITS}
    terms = SANetLoss(class_weights=WEIGHTS).terms(mask, outputs)
    assert float(to_numpy(terms["seg"])) == 0.0
    assert float(to_numpy(terms["aux"])) == 0.0
    # No class is present, so the categorical term still has all-zero targets.
    np.testing.assert_allclose(
        to_numpy(terms["cat"]), np_categorical(mask, SE_LOGITS), rtol=1e-5
    )
    grad = _gradient(lambda z: segmentation_cross_entropy(mask, z), LOGITS)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad, np.zeros_like(LOGITS))


@pytest.mark.parametrize("class_weights", [None, WEIGHTS])
def test_gradient_matches_numpy(class_weights):
    grad = _gradient(
        lambda z: segmentation_cross_entropy(MASK, z, class_weights=class_weights),
        LOGITS,
    )
    expected = np_cross_entropy_grad(MASK, LOGITS, class_weights=class_weights)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_are_computed_in_float32(dtype):
    outputs = {
        "logits": keras.ops.cast(LOGITS, dtype),
        "se_logits": keras.ops.cast(SE_LOGITS, dtype),
    }
    value = SANetLoss()(MASK, outputs)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    # Only the inputs' rounding differs from the float32 reference.
    rounded = to_numpy(keras.ops.cast(outputs["logits"], "float32"))
    rounded_se = to_numpy(keras.ops.cast(outputs["se_logits"], "float32"))
    expected = np_cross_entropy(MASK, rounded) + 0.2 * np_categorical(MASK, rounded_se)
    np.testing.assert_allclose(to_numpy(value), expected, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"beta": -1}, "beta"),
        ({"class_weights": [1.0, -2.0, 1.0]}, "non-negative"),
        ({"class_weights": [1.0, float("nan"), 1.0]}, "finite"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SANetLoss(**kwargs)


def test_class_weights_length_is_checked_at_call():
    loss_fn = SANetLoss(class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="2 entries but the logits have 3 classes"):
        loss_fn(MASK, LOGITS)


@pytest.mark.parametrize(
    "mask, match",
    [
        (MASK[0], "rank 2"),
        (MASK[..., None, None], "rank 5"),
        (np.stack([MASK] * 3, axis=-1), "one channel"),
        (MASK[:, :2], "does not match the mask"),
    ],
)
def test_bad_masks_raise(mask, match):
    with pytest.raises(ValueError, match=match):
        SANetLoss()(mask, LOGITS)


def test_bad_outputs_raise():
    loss_fn = SANetLoss()
    with pytest.raises(ValueError, match="aux_logit"):
        loss_fn(MASK, {"logits": LOGITS, "aux_logit": AUX_LOGITS})
    with pytest.raises(ValueError, match="'logits' required"):
        loss_fn(MASK, {"se_logits": SE_LOGITS})
    with pytest.raises(ValueError, match="shape \\(N, num_classes\\)"):
        loss_fn(MASK, {"logits": LOGITS, "se_logits": SE_LOGITS[:, None]})
    with pytest.raises(ValueError, match="sample_weight"):
        loss_fn(MASK, LOGITS, sample_weight=np.ones(2))


def test_serialization_round_trip():
    loss_fn = SANetLoss(alpha=0.4, beta=0.6, ignore_index=11, class_weights=WEIGHTS)
    config = loss_fn.get_config()
    assert config["class_weights"] == list(WEIGHTS)
    json.dumps(config)  # plain JSON types only
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(loss_fn)))
    )
    assert isinstance(restored, SANetLoss)
    assert restored.get_config() == config
    outputs = {"logits": LOGITS, "se_logits": SE_LOGITS, "aux_logits": AUX_LOGITS}
    np.testing.assert_allclose(
        to_numpy(restored(MASK, outputs)), to_numpy(loss_fn(MASK, outputs)), rtol=1e-6
    )


class _TinySANet(keras.Model):
    """A 1x1-conv stand-in with SANet's training outputs, to train the loss."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.head = keras.layers.Conv2D(num_classes, 1)
        self.aux_head = keras.layers.Conv2D(num_classes, 1)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.se_head = keras.layers.Dense(num_classes)
        self.sanet_loss = SANetLoss()

    def call(self, images, training=False):
        logits = self.head(images)
        if not training:
            return logits
        return {
            "logits": logits,
            "se_logits": self.se_head(self.pool(images)),
            "aux_logits": self.aux_head(images),
        }

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return self.sanet_loss(y, y_pred)


def test_trains_compiled_and_evaluates_to_the_segmentation_term():
    images = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype("float32")
    model = _TinySANet(NUM_CLASSES, name="tiny_sanet")
    model(images, training=True)  # builds every head
    # Compiled steps: XLA on TensorFlow and JAX; torch runs eagerly.
    jit = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(images, MASK, batch_size=2, epochs=1, verbose=0)
    train_loss = history.history["loss"][0]
    assert np.isfinite(train_loss) and train_loss > 0
    after = [to_numpy(w) for w in model.trainable_weights]
    assert all(np.all(np.isfinite(w)) for w in after)
    assert all(not np.allclose(b, a) for b, a in zip(before, after))

    logits = to_numpy(model.predict(images, verbose=0))
    loss = model.evaluate(images, MASK[..., None], batch_size=2, verbose=0)
    np.testing.assert_allclose(loss, np_cross_entropy(MASK, logits), rtol=1e-5)


# The never-trained optimizer has no variables to restore; that is expected.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_compile_loss_of_a_logits_model_survives_saving(tmp_path):
    # A plain segmentation model (logits only) can use SANetLoss in compile();
    # the saved .keras file brings the configured loss back.
    inputs = keras.Input((3, 4, 5))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(inputs))
    model.compile(loss=SANetLoss(class_weights=WEIGHTS))
    images = np.random.default_rng(1).normal(size=(2, 3, 4, 5)).astype("float32")
    logits = to_numpy(model.predict(images, verbose=0))
    expected = np_cross_entropy(MASK, logits, class_weights=WEIGHTS)
    np.testing.assert_allclose(
        model.evaluate(images, MASK, batch_size=2, verbose=0), expected, rtol=1e-5
    )
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(
        restored.evaluate(images, MASK, batch_size=2, verbose=0), expected, rtol=1e-5
    )
