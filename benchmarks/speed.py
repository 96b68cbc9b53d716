"""Speed of SANet against keras-hub's DeepLabV3, per Keras backend (not run in CI).

For every backend and model, in a fresh subprocess (the backend is chosen
before Keras is imported, and each process's peak RSS is its own):
inference images/s (`predict_on_batch`, the backend's compiled predict
path; warm-up excluded, median of `--repeats`), the time of one training
step (`train_on_batch`, SGD; SANet's own loss, sparse cross-entropy for the
peer), timed in turn with the inference, peak RSS, and a float32 matmul's
GFLOP/s measured in the same process before and after the model and right
before and after every timed inference call (this host's throughput moves
for seconds at a time: each call is scored against the matmul beside it,
`% peak paired`, and `train/infer` is the median per-turn ratio). FLOPs per
image are counted once per model from its layers (`benchmarks/flops.py`:
multiply-add = 2 FLOPs, conv and dense layers only). The CamVid training input pipeline
(`benchmarks/input_pipeline.py`) is timed at each training input size.

Models:
    sanet_resnet50_os8             SANet, dilated ResNet-50, output stride 8 (the paper)
    sanet_resnet50_os32            SANet at the peer's output stride
    deeplabv3_resnet50             keras-hub DeepLabV3ImageSegmenter on ResNet-50 (v1),
                                   built from classes with random weights, configured like
                                   keras-hub's preset deeplab_v3_plus_resnet50_pascalvoc
                                   (ASPP on P5 of an undilated ResNet: output stride 32,
                                   P2 decoder)
    sanet_mobilenetv2_os16_camvid  the CPU zoo entry, at its own input size (360x480)

The ResNet-50 models have 21 classes (PASCAL VOC) and take `--size`
square images. Prints a Markdown table (stdout), progress (stderr), and
writes everything measured as JSON.

Variants (`--variants`, default `default`), each in its own children; ratios
pair rows of one variant, and each goal names its best variant:
    default         Keras' defaults: float32, jit_compile="auto" (XLA on JAX only)
    jit_compile     compile(jit_compile=True): XLA on TensorFlow (skipped on JAX, where
                    it is the default, and on PyTorch, where it is torch.compile; see
                    VARIANT_SKIPS)
    mixed_bfloat16  models built under the mixed_bfloat16 dtype policy, scored against
                    a bfloat16 matmul peak (the float32 one is recorded too)
    cpu_malloc      Keras' defaults in children started with glibc's malloc tunables
                    (keras_sanet/cpu_malloc.py; Linux with glibc only): freed memory is
                    kept for the next call instead of being faulted in again

    python benchmarks/speed.py                                    # tens of minutes of CPU
    python benchmarks/speed.py --backends jax --batch-sizes 1 --models sanet_resnet50_os8
    python benchmarks/speed.py --toy --backends tensorflow        # tiny models: a smoke run
    python benchmarks/speed.py --variants default,jit_compile,mixed_bfloat16
    python benchmarks/speed.py --variants default,cpu_malloc --batch-sizes 1
    python benchmarks/speed.py --exports                          # + the zoo model exported
"""

import argparse
import datetime
import fractions
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import NamedTuple

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCHMARKS_DIR)
sys.path.insert(0, BENCHMARKS_DIR)

from input_pipeline import DEFAULT_ROOT as CAMVID_ROOT  # noqa: E402
from input_pipeline import measure_pipeline  # noqa: E402

# keras_sanet/cpu_malloc.py read on its own: importing the package would import Keras
# in this parent, which only plans and starts the children.
_spec = importlib.util.spec_from_file_location(
    "cpu_malloc", os.path.join(REPO_ROOT, "keras_sanet", "cpu_malloc.py"))
cpu_malloc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_malloc)

BACKENDS = ("tensorflow", "jax", "torch")
NUM_CLASSES = 21  # PASCAL VOC, for the ResNet-50 models and the peer alike
ZOO_PRESET = "sanet_mobilenetv2_os16_camvid"
# keras-hub's DeepLabV3 runs its ASPP on this level of an undilated ResNet.
DEEPLAB_SPP_KEY = "P5"
PEER_OUTPUT_STRIDE = 2 ** int(DEEPLAB_SPP_KEY[1:])
PEER = "deeplabv3_resnet50"
SANET_OS8 = "sanet_resnet50_os8"
SANET_AT_PEER_OS = f"sanet_resnet50_os{PEER_OUTPUT_STRIDE}"
# name: (kind, backbone, output stride); toy runs swap ResNet-50 for ResNet-18.
MODELS = {
    SANET_OS8: ("sanet", "resnet50", 8),
    SANET_AT_PEER_OS: ("sanet", "resnet50", PEER_OUTPUT_STRIDE),
    PEER: ("deeplab", "resnet50", PEER_OUTPUT_STRIDE),
    ZOO_PRESET: ("zoo", "mobilenetv2", 16),
}
TOY_BACKBONES = {"resnet50": "resnet18"}
# --exports: format -> (file name in the export folder, runtime shown in the table).
EXPORTS = {
    "saved_model": ("saved_model", "tf saved_model"),
    "tflite": ("model.tflite", "tflite"),
    "onnx": ("model.onnx", "onnxruntime"),
}


class Variant(NamedTuple):
    """How a variant's models are built and compiled."""

    dtype_policy: str | None  # set globally before building; None: Keras' default
    jit_compile: bool | str  # given to Model.compile
    description: str
    # Children started with keras_sanet.cpu_malloc's GLIBC_TUNABLES (read when a
    # process starts, so set by the parent); False: the environment as it is.
    malloc_tunables: bool = False


VARIANTS = {
    "default": Variant(None, "auto", "Keras' defaults: float32, jit_compile='auto' "
                       "(XLA on JAX; off on a CPU-only TensorFlow, eager on PyTorch)"),
    "jit_compile": Variant(None, True, "compile(jit_compile=True): XLA on TensorFlow"),
    "mixed_bfloat16": Variant("mixed_bfloat16", "auto", "built under the mixed_bfloat16 "
                              "dtype policy (bfloat16 compute, float32 weights), scored "
                              "against a bfloat16 matmul peak"),
    "cpu_malloc": Variant(None, "auto", "Keras' defaults in processes started with glibc's "
                          "malloc tunables (keras_sanet/cpu_malloc.py: freed memory kept "
                          "for the next step, one arena)", malloc_tunables=True),
}
# (variant, backend) -> why it is not run there; the row carries the reason.
VARIANT_SKIPS = {
    ("jit_compile", "jax"): "JAX: Keras always jit-compiles (XLA) predict and train, so "
                            "the default variant already is this one",
    # Tried on the --toy SANet at 64x64, batch 1 (torch 2.13, Keras 3.15, 2 shared CPU
    # cores, nice 19): the first predict took 160 s and the first train step 106 s
    # (eager: 0.6 s and 3 s); later calls were within the noise of eager ones.
    ("jit_compile", "torch"): "PyTorch: jit_compile=True is torch.compile, unusable here: "
                              "minutes of compiling even for the --toy SANet, and Dynamo "
                              "hits its recompile limit (8) in Keras' Functional.call, "
                              "falling back to eager there",
}
GOAL_PEAK_FRACTION = 0.85
GOAL_PEER_RATIO = 1.2
GOAL_TRAIN_RATIO = 3.3
MB = 1024 * 1024


def log(message):
    """Progress goes to stderr, one line per measurement (stdout carries the table)."""
    print(f"speed: {message}", file=sys.stderr, flush=True)


def variant_skip_reason(variant, backend):
    """Why `variant` is not run under `backend`, or None when it is."""
    if VARIANTS[variant].malloc_tunables and not cpu_malloc.uses_glibc():
        return "GLIBC_TUNABLES exist on Linux with glibc only"
    return VARIANT_SKIPS.get((variant, backend))


def matmul_key(dtype):
    """Prefix of a row's matmul keys in `dtype` (`matmul_peak_gflops` is float32's)."""
    return "matmul" if dtype == "float32" else f"matmul_{dtype}"


# --------------------------------------------------------------------------
# Child process: one (backend, model, variant, batch) measurement.
# --------------------------------------------------------------------------


def _minor_page_faults():
    """This process's minor page faults so far (pages the kernel mapped in and
    zeroed: what glibc's malloc costs when it hands memory back; None off Unix)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_calls(fn, repeats, warmup):
    """`(warm-up seconds, [seconds of each timed call], [minor page faults of each
    timed call])`: `warmup` calls, then `repeats`."""
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    warmup_seconds = time.perf_counter() - start
    seconds, faults = [], []
    for _ in range(repeats):
        faults_before = _minor_page_faults()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
        if faults_before is not None:
            faults.append(_minor_page_faults() - faults_before)
    return warmup_seconds, seconds, faults


def _time_in_turn(infer, train, repeats, warmup, peak):
    """Times `infer` and `train` (None: inference only) in turn, with `peak()` (a
    matmul's GFLOP/s) measured right before and right after each timed inference.

    Returns `(infer timings, train timings or None, [best peak beside each
    inference])`, each timing a `(warm-up s, [s of each timed call], [minor page
    faults of each])` triple as `_time_calls` gives. This host's throughput moves
    between levels for seconds at a time (a float32 matmul here swings between
    ~180 and ~300 GFLOP/s):
    timing all inferences and then all training steps puts the two in different
    moments, and a peak taken once elsewhere can be off by that factor. Taking
    them in turn puts every inference next to a training step and to its peak.
    """
    infer_warmup = _time_calls(infer, 0, warmup)[0]
    train_warmup = _time_calls(train, 0, warmup)[0] if train else None
    infer_seconds, infer_faults, train_seconds, train_faults, beside = [], [], [], [], []
    for _ in range(repeats):
        before = peak()
        _, seconds, faults = _time_calls(infer, 1, 0)
        infer_seconds += seconds
        infer_faults += faults
        beside.append(max(before, peak()))
        if train:
            _, seconds, faults = _time_calls(train, 1, 0)
            train_seconds += seconds
            train_faults += faults
    trained = (train_warmup, train_seconds, train_faults) if train else None
    return (infer_warmup, infer_seconds, infer_faults), trained, beside


def _rss_mb():
    """Current resident set size (Linux /proc), for the baseline before the model."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb():
    import resource

    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def matmul_gflops(size, repeats=3, dtype="float32"):
    """Best GFLOP/s of a `size`x`size` matmul in `dtype`, with NumPy and the Keras backend.

    NumPy only for float32 (it has no bfloat16 arithmetic).
    """
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    ta = keras.ops.convert_to_tensor(a, dtype=dtype)
    tb = keras.ops.convert_to_tensor(b, dtype=dtype)
    calls = {
        "numpy": lambda: a @ b,
        # convert_to_numpy waits for the result (JAX dispatches asynchronously).
        "backend": lambda: keras.ops.convert_to_numpy(keras.ops.matmul(ta, tb)),
    }
    if dtype != "float32":
        del calls["numpy"]
    flops = 2 * size**3
    return {
        name: flops / min(_time_calls(call, repeats, warmup=1)[1]) / 1e9
        for name, call in calls.items()
    }


def _input_size(job):
    """`(height, width)` of the model's input: `--size` squares, the zoo model's own size."""
    if job["model"] != ZOO_PRESET:
        return (job["size"], job["size"])
    import keras_sanet

    height, width = {row["name"]: row["input_size"] for row in keras_sanet.list_presets()}[
        ZOO_PRESET
    ]
    if job["toy"]:  # the preset's aspect ratio at --size wide
        height, width = round(height * job["size"] / width), job["size"]
    return (int(height), int(width))


def build_deeplab(toy):
    """keras-hub's DeepLabV3 image segmenter on ResNet-50 v1 (3-4-6-3 bottlenecks), random weights.

    Configured like keras-hub's preset `deeplab_v3_plus_resnet50_pascalvoc`
    (`from_preset` needs a download). `toy`: a one-block-per-stage basic ResNet.
    """
    import keras_hub

    if toy:
        encoder = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 16, 16, 16],  # keras-hub requires 64 first
            stackwise_num_blocks=[1, 1, 1, 1],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
        )
    else:
        encoder = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[3, 4, 6, 3],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="bottleneck_block",
            use_pre_activation=False,
        )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key=DEEPLAB_SPP_KEY,
        upsampling_size=8,
        dilation_rates=[6, 12, 18],
        low_level_feature_key="P2",
        projection_filters=48,
    )
    return keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=NUM_CLASSES)


def _deeplab_output_stride(model, input_size):
    """The stride of the peer's ASPP input, read from the built encoder (not assumed)."""
    import keras

    encoder = model.backbone.image_encoder
    probe = keras.Model(encoder.inputs, encoder.pyramid_outputs[DEEPLAB_SPP_KEY])
    height = probe.compute_output_shape((1, *input_size, 3))[1]
    return input_size[0] // height


def build_model(job, input_size):
    """`(model, output_stride, backbone)` for the job's model name, built and compiled.

    The job's variant (default `"default"`) sets the global dtype policy before
    building (keras-hub's layers follow it) and `jit_compile`.
    """
    import keras
    import keras_sanet

    variant = VARIANTS[job.get("variant", "default")]
    if variant.dtype_policy:
        keras.config.set_dtype_policy(variant.dtype_policy)
    # Explicit for SANet: a preset's config carries the policy it was saved under.
    dtype = keras.config.dtype_policy().name
    kind, backbone, output_stride = MODELS[job["model"]]
    if job["toy"]:
        backbone = TOY_BACKBONES.get(backbone, backbone)
    if kind == "deeplab":
        model = build_deeplab(job["toy"])
        output_stride = _deeplab_output_stride(model, input_size)
        backbone = "resnet (toy)" if job["toy"] else backbone
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    else:
        if kind == "zoo":
            model = keras_sanet.SANet.from_preset(ZOO_PRESET, dtype=dtype)
        else:
            model = keras_sanet.SANet(
                backbone=backbone, num_classes=NUM_CLASSES, output_stride=output_stride,
                dtype=dtype,
            )
        model.build((None, *input_size, 3))  # SANet builds on its first call otherwise
        loss = None  # SANet.compile's default: SANet's loss (SE and auxiliary heads)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    model.compile(optimizer=optimizer, loss=loss, metrics=[], jit_compile=variant.jit_compile)
    if variant.jit_compile is True and not model.jit_compile:
        raise RuntimeError(
            f"Keras turned jit_compile=True off for {job['model']} (a layer without "
            "supports_jit, or op determinism enabled); the jit_compile variant would time "
            "the default one. Run it without --variants jit_compile."
        )
    return model, output_stride, backbone


def layer_compute_dtypes(model):
    """`{layer class: [compute dtypes]}` of the model's conv and dense layers.

    Read from the built layers (those `benchmarks/flops.py` counts), so a row
    shows the precision its arithmetic actually ran in, not the one asked for.
    """
    from flops import counted_layers

    seen = {}
    for layer in counted_layers(model, include_self=False):
        seen.setdefault(type(layer).__name__, set()).add(layer.compute_dtype)
    return {name: sorted(dtypes) for name, dtypes in seen.items()}


def runs_winograd(model):
    """Whether the model's convolutions run as Winograd where it takes them
    (keras_sanet's Conv2D: on where no GPU or TPU is visible, in float32, on
    large enough inputs: `flops.winograd_calls` lists those)."""
    return any(getattr(layer, "winograd_applies", False) and layer.winograd
               for layer in model._flatten_layers())


def _exported_predictor(model, export_format, folder, input_size, result):
    """The model exported with keras_sanet.export, as a callable NHWC float32 -> logits.

    The artifact is fixed to the benchmark's input size (TFLite needs it; the
    others then get the same static shapes to optimise for).
    """
    try:
        from keras_sanet.export import export_model
        from keras_sanet.export import exported_size
        from keras_sanet.export import load_exported
    except ImportError as error:
        raise RuntimeError(
            "--exports needs keras_sanet.export (export_model(model, path, format) and "
            f"load_exported(path, format)), which this checkout lacks ({error})."
        ) from error
    path = os.path.join(folder, EXPORTS[export_format][0])
    export_model(model, path, export_format, input_size=input_size)
    result["exported_mb"] = exported_size(path) / MB
    return load_exported(path, export_format)


def _timing(calls, batch):
    """Timing dict of a `_time_calls` result; the warm-up includes tracing and compiling."""
    warmup_seconds, seconds, faults = calls
    median = statistics.median(seconds)
    return {
        "seconds": seconds,
        "median_s": median,
        "images_per_second": batch / median,
        "warmup_s": warmup_seconds,
        # Pages mapped in and zeroed during each timed call (cpu_malloc: ~0).
        "minor_page_faults": faults,
    }


def run_job(job):
    """Measures one (backend, model, batch[, export format]); returns a JSON-able dict."""
    import keras
    import numpy as np

    name = f"{job['backend']} {job['model']} {job['variant']} batch {job['batch']}"
    if job.get("export"):
        name += f" [{EXPORTS[job['export']][1]}]"
    result = {"rss_start_mb": _rss_mb(), "keras": keras.__version__,
              "glibc_tunables": os.environ.get(cpu_malloc.ENVIRONMENT_VARIABLE)}
    # A variant computing in another dtype is scored against a matmul in that dtype.
    policy = VARIANTS[job["variant"]].dtype_policy
    peak_dtype = keras.dtype_policies.get(policy).compute_dtype if policy else "float32"
    peak_dtypes = list(dict.fromkeys(["float32", peak_dtype]))
    for dtype in peak_dtypes:
        result[f"{matmul_key(dtype)}_before"] = matmul_gflops(job["matmul_size"], dtype=dtype)
    input_size = _input_size(job)
    start = time.perf_counter()
    model, output_stride, backbone = build_model(job, input_size)
    result["build_s"] = time.perf_counter() - start
    result.update(
        input_size=list(input_size),
        output_stride=output_stride,
        backbone=backbone,
        parameters=int(model.count_params()),
        jit_compile=model.jit_compile,
        dtype_policy=model.dtype_policy.name,
        compute_dtypes=layer_compute_dtypes(model),
        peak_dtype=peak_dtype,
        # Exports trace plain convolutions (keras_sanet.export.plain_convolutions).
        winograd=not job.get("export") and runs_winograd(model),
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (job["batch"], *input_size, 3)).astype("float32")
    labels = rng.integers(0, model.num_classes, (job["batch"], *input_size)).astype("int32")
    repeats, warmup = job["repeats"], job["warmup"]

    def peak():
        return max(matmul_gflops(job["matmul_size"], repeats=2, dtype=peak_dtype).values())

    with tempfile.TemporaryDirectory() as folder:
        if job.get("export"):
            predict = _exported_predictor(model, job["export"], folder, input_size, result)
            infer, train = (lambda: predict(images)), None
        else:
            infer = lambda: model.predict_on_batch(images)  # noqa: E731
            train = lambda: model.train_on_batch(images, labels)  # noqa: E731
        infer_calls, train_calls, beside = _time_in_turn(infer, train, repeats, warmup, peak)
    result["infer"] = _timing(infer_calls, job["batch"]) | {"peak_gflops_beside": beside}
    log(f"{name}: inference {result['infer']['images_per_second']:.3g} images/s")
    if train_calls:
        result["train"] = _timing(train_calls, job["batch"])
        log(f"{name}: train step {result['train']['median_s']:.3g} s")
    result["peak_rss_mb"] = _peak_rss_mb()
    for dtype in peak_dtypes:
        key = matmul_key(dtype)
        result[f"{key}_after"] = matmul_gflops(job["matmul_size"], dtype=dtype)
        result[f"{key}_peak_gflops"] = max(
            *result[f"{key}_before"].values(), *result[f"{key}_after"].values()
        )
        log(f"{name}: {dtype} matmul peak {result[f'{key}_peak_gflops']:.3g} GFLOP/s")
    log(f"{name}: peak RSS {result['peak_rss_mb']:.0f} MB")
    if job["count_flops"]:
        from flops import count_flops
        from flops import winograd_calls
        from flops import winograd_totals

        start = time.perf_counter()
        result["flops_per_image"] = count_flops(model, (1, *input_size, 3))
        # The training forward pass can do more (SANet's auxiliary head runs only there).
        result["train_flops_per_image"] = count_flops(model, (1, *input_size, 3), training=True)
        # Of those, the convolutions Winograd takes, and the multiply-adds they
        # execute at each layer's tile size where a row runs it (`executed_flops`);
        # one trace for both.
        taken = winograd_calls(model, (1, *input_size, 3))
        (result["winograd_flops_per_image"],
         result["winograd_executed_flops_per_image"]) = winograd_totals(taken)
        result["winograd_output_sizes"] = sorted({size for size, _ in taken})
        result["count_flops_s"] = time.perf_counter() - start
        log(f"{name}: {result['flops_per_image'] / 1e9:.4g} GFLOPs per image, training "
            f"forward {result['train_flops_per_image'] / 1e9:.4g}")
    return result


def run_pipeline_job(job):
    """The CamVid train pipeline's images/s at one crop size."""
    if not os.path.isdir(job["root"]):
        return {"skipped": f"no CamVid data at {job['root']}"}
    result = measure_pipeline(
        job["root"], job["crop"], job["batch"], job["batches"], warmup=job["warmup"]
    )
    log(f"input pipeline at {job['crop'][0]}x{job['crop'][1]}: "
        f"{result['images_per_second']:.3g} images/s")
    return result


def child_main(job_json, out_path):
    started = time.perf_counter()
    job = json.loads(job_json)
    try:
        result = run_pipeline_job(job) if job["kind"] == "pipeline" else run_job(job)
    except Exception as error:  # reported in the row; the other measurements go on
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
    result["child_s"] = time.perf_counter() - started  # imports included
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


# --------------------------------------------------------------------------
# Parent process: plan, run the children, derive ratios, print and write.
# --------------------------------------------------------------------------


def child_environment(job, backend, environ=None):
    """The environment a child starts with: `environ` (default `os.environ`) with
    the backend, this checkout on the path and the job's variant's settings."""
    env = dict(os.environ if environ is None else environ, KERAS_BACKEND=backend)
    if job.get("variant") and VARIANTS[job["variant"]].malloc_tunables:
        env = cpu_malloc.environment(env)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(job, backend, timeout):
    """Runs `job` in a fresh interpreter under `backend`; returns its result dict."""
    env = child_environment(job, backend)
    with tempfile.TemporaryDirectory() as folder:
        out_path = os.path.join(folder, "result.json")
        command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job),
                   "--child-out", out_path]
        tail = deque(maxlen=30)
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, cwd=REPO_ROOT) as proc:
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            for line in proc.stdout:  # relay the child's progress lines as they come
                if line.startswith("speed: "):
                    sys.stderr.write(line)
                else:
                    tail.append(line)
            returncode = proc.wait()
            timer.cancel()
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as f:
                result = json.load(f)
        elif timer.finished.is_set() and returncode < 0:
            result = {"error": f"timed out after {timeout:g} s (--timeout)"}
        else:
            result = {"error": f"the child exited with {returncode} and no result"}
    if "error" in result:
        result["log_tail"] = "".join(tail)
        log(f"{backend} {job.get('model', 'pipeline')}: FAILED {result['error']}")
    return result


def plan_jobs(args):
    """One job per (backend, variant, model, batch), then the export jobs (TensorFlow).

    A variant a backend cannot run is planned all the same, with its reason under
    `"skipped"`, so that the table and the JSON say why it has no numbers.
    """
    common = dict(
        kind="model", toy=args.toy, size=args.size, repeats=args.repeats,
        warmup=args.warmup, matmul_size=args.matmul_size, count_flops=False,
    )
    jobs = []
    for backend in args.backends:
        for variant in args.variants:
            skipped = variant_skip_reason(variant, backend)
            for model in args.models:
                for batch in args.batch_sizes:
                    job = dict(common, backend=backend, model=model, variant=variant,
                               batch=batch)
                    jobs.append(job | ({"skipped": skipped} if skipped else {}))
    # FLOPs do not depend on the variant: counted once per model, in its first job that
    # runs, preferably under TensorFlow (the cheapest trace).
    for model in args.models:
        runs = [job for job in jobs if job["model"] == model and "skipped" not in job]
        if runs:
            min(runs, key=lambda job: job["backend"] != "tensorflow")["count_flops"] = True
    if args.exports:
        # The zoo model's FLOPs serve its exported rows; counted here if it has no own row.
        # The exported graph is the default variant's (float32, no jit_compile).
        count = not any(job["count_flops"] for job in jobs if job["model"] == ZOO_PRESET)
        for export_format in EXPORTS:
            for batch in args.batch_sizes:
                jobs.append(dict(common, backend="tensorflow", model=ZOO_PRESET,
                                 variant="default", batch=batch, count_flops=count,
                                 export=export_format))
                count = False
    return jobs


def _pairing_key(row):
    """Rows compared with each other: same variant, backend, batch and input."""
    return (row["variant"], row["backend"], row["batch"], tuple(row["input_size"]))


def derive(rows, pipelines):
    """Adds FLOP rates, peak fractions, train/infer and peer ratios to measured rows.

    A row's FLOP rate is scored against the matmul peak in its compute dtype
    (`peak_dtype`: bfloat16 for mixed_bfloat16), and it is compared with the peer
    of its own variant, backend, batch and input only.
    """
    flops = {r["model"]: r["flops_per_image"] for r in rows if r.get("flops_per_image")}
    train_flops = {
        r["model"]: r["train_flops_per_image"] for r in rows if r.get("train_flops_per_image")
    }
    winograd_counts = {r["model"]: r for r in rows
                       if r.get("winograd_flops_per_image") is not None}
    peers = {
        _pairing_key(r): r
        for r in rows
        if r["model"] == PEER and not r.get("export") and "infer" in r
    }
    pipeline_rates = {tuple(p["crop"]): p["images_per_second"] for p in pipelines
                      if "images_per_second" in p}
    for row in rows:
        if "infer" not in row:
            continue
        rate = row["infer"]["images_per_second"]
        row["ms_per_image"] = 1000 / rate
        row["flops_per_image"] = flops.get(row["model"])
        row["train_flops_per_image"] = train_flops.get(row["model"])
        row["scored_peak_gflops"] = row[f"{matmul_key(row['peak_dtype'])}_peak_gflops"]
        if row["flops_per_image"]:
            row["gflops_per_second"] = row["flops_per_image"] * rate / 1e9
            row["fraction_of_matmul_peak"] = row["gflops_per_second"] / row["scored_peak_gflops"]
            beside = row["infer"].get("peak_gflops_beside")
            if beside:
                # Each call against the matmul timed right beside it, median over calls.
                row["fraction_of_matmul_peak_paired"] = statistics.median(
                    row["flops_per_image"] * row["batch"] / seconds / 1e9 / peak
                    for seconds, peak in zip(row["infer"]["seconds"], beside)
                )
            counted = winograd_counts.get(row["model"])
            executed = executed_flops(row, counted)
            if executed is not None:
                if row["winograd"]:
                    row["winograd_output_sizes"] = counted.get("winograd_output_sizes", [])
                row["executed_flops_per_image"] = executed
                row["executed_fraction_of_peak"] = (
                    _peak_fraction(row) * executed / row["flops_per_image"])
        if "train" in row:
            # One training step against one inference of the same batch: the median of
            # the ratios of calls timed in turn when there are as many of each.
            infer_s, train_s = row["infer"].get("seconds"), row["train"].get("seconds")
            if infer_s and train_s and len(infer_s) == len(train_s):
                row["train_over_infer"] = statistics.median(
                    t / i for t, i in zip(train_s, infer_s))
            else:
                row["train_over_infer"] = row["train"]["median_s"] / row["infer"]["median_s"]
            if row["flops_per_image"] and row["train_flops_per_image"]:
                # The same ratio per FLOP of forward pass: what is left once the
                # training-only layers' extra forward work is taken out.
                row["train_forward_flops_ratio"] = (
                    row["train_flops_per_image"] / row["flops_per_image"])
                row["train_over_infer_per_flop"] = (
                    row["train_over_infer"] / row["train_forward_flops_ratio"])
            pipeline_rate = pipeline_rates.get(tuple(row["input_size"]))
            if pipeline_rate:
                row["pipeline_over_train"] = pipeline_rate / row["train"]["images_per_second"]
        peer = peers.get(_pairing_key(row))
        if row["model"].startswith("sanet_resnet50") and peer and not row.get("export"):
            row["vs_peer"] = rate / peer["infer"]["images_per_second"]
            row["peer_output_stride"] = peer["output_stride"]


def _count_verdict(values, passes):
    met = sum(1 for value in values if passes(value))
    if met == len(values):
        return "**met**"
    return "**not met**" if met == 0 else f"**partly met** ({met} of {len(values)})"


def best_variant(rows, key, passes, higher_is_better):
    """`(best variant, its rows, {variant: verdict})` for a goal judged on several rows.

    The best variant meets the goal on the largest share of its rows (backends
    and batches), ties going to the better median `row[key]`.
    """
    by_variant = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)

    def score(variant):
        values = [row[key] for row in by_variant[variant]]
        median = statistics.median(values)
        met = sum(1 for value in values if passes(value)) / len(values)
        return (met, median if higher_is_better else -median)

    verdicts = {
        variant: _count_verdict([row[key] for row in variant_rows], passes)
        for variant, variant_rows in by_variant.items()
    }
    best = max(by_variant, key=score)
    return best, by_variant[best], verdicts


def _other_variants(verdicts, best):
    others = [f"{variant} {verdict}" for variant, verdict in verdicts.items() if variant != best]
    return "; other variants: " + ", ".join(others) if others else ""


def executed_flops(row, counted):
    """The row's inference FLOPs per image as executed: the counted (direct
    convolution) FLOPs, with those of the layers Winograd runs replaced by the
    multiply-adds it executes at their tile sizes. `counted`: the row of the
    same model that counted them (or None). None where the row's Winograd use
    or those layers' FLOPs are unknown."""
    if counted is None or "winograd" not in row:
        return None
    if not row["winograd"]:
        return row["flops_per_image"]
    return (row["flops_per_image"] - counted["winograd_flops_per_image"]
            + counted["winograd_executed_flops_per_image"])


def winograd_name(output_sizes):
    """"Winograd F(4x4, 3x3)" for the tile sizes a row's layers ran."""
    tiles = " and ".join(f"F({m}x{m}, 3x3)" for m in output_sizes)
    return f"Winograd {tiles}".rstrip()


def _peak_fraction(row):
    """The row's fraction of peak that goal (a) is judged on: paired when measured."""
    return row.get("fraction_of_matmul_peak_paired", row.get("fraction_of_matmul_peak"))


def goals(rows):
    """The issue's three goals, each judged from the measured rows, naming the best variant."""
    keras_rows = [r for r in rows if not r.get("export") and "infer" in r]
    os8 = [r for r in keras_rows if r["model"] == SANET_OS8]
    lines = []

    scored = [r for r in os8 if _peak_fraction(r) is not None]
    if scored:
        best = max(scored, key=_peak_fraction)
        verdict = "**met**" if _peak_fraction(best) >= GOAL_PEAK_FRACTION else "**not met**"
        paired = "fraction_of_matmul_peak_paired" in best
        how = (
            "each timed call against the matmul timed right beside it, median of the calls; "
            "against the best matmul timed before and after the whole measurement "
            f"{best['fraction_of_matmul_peak']:.1%}, "
            if paired else ""
        )
        executed = ""
        if best.get("executed_flops_per_image", best["flops_per_image"]) < best["flops_per_image"]:
            executed = (
                " FLOPs are counted as direct convolutions; this row runs "
                f"{1 - best['executed_flops_per_image'] / best['flops_per_image']:.0%} fewer "
                f"({winograd_name(best.get('winograd_output_sizes', []))} on its stride-1 3x3 "
                "convolutions): of the "
                f"multiply-adds it executes, {best['executed_fraction_of_peak']:.1%} of peak."
            )
        lines.append(
            f"(a) SANet-ResNet-50 OS8 inference at >= {GOAL_PEAK_FRACTION:.0%} of the measured "
            f"matmul peak on the best backend and variant: {verdict}; best "
            f"{_peak_fraction(best):.1%} ({best['backend']}, {best['variant']}, "
            f"batch {best['batch']}: {how}{best['gflops_per_second']:.1f} of "
            f"{best['scored_peak_gflops']:.1f} {best['peak_dtype']} GFLOP/s).{executed}"
        )
    else:
        lines.append(f"(a) matmul-peak fraction: not measured ({SANET_OS8} not run).")

    pairs = [r for r in keras_rows if r["model"] == SANET_AT_PEER_OS and "vs_peer" in r]
    if pairs:
        variant, pairs, verdicts = best_variant(
            pairs, "vs_peer", lambda v: v >= GOAL_PEER_RATIO, higher_is_better=True)
        same_os = all(r["output_stride"] == r["peer_output_stride"] for r in pairs)
        values = ", ".join(f"{r['backend']} b{r['batch']} {r['vs_peer']:.2f}x" for r in pairs)
        caveat = "" if same_os else (
            " (the peer's measured output stride differs from SANet's: not apples to apples)")
        lines.append(
            f"(b) SANet >= {GOAL_PEER_RATIO}x DeepLabV3's images/s at the same output stride "
            f"(OS{pairs[0]['output_stride']}) and input: {verdicts[variant]}{caveat}; best "
            f"variant {variant}: {values}{_other_variants(verdicts, variant)}."
        )
    else:
        lines.append(f"(b) SANet vs DeepLabV3: not measured (needs {SANET_AT_PEER_OS} and {PEER}).")

    trained = [r for r in os8 if "train_over_infer" in r]
    if trained:
        variant, trained, verdicts = best_variant(
            trained, "train_over_infer", lambda v: v <= GOAL_TRAIN_RATIO,
            higher_is_better=False)
        values = ", ".join(
            f"{r['backend']} b{r['batch']} {r['train_over_infer']:.2f}x" for r in trained)
        per_flop = [r for r in trained if r.get("train_over_infer_per_flop")]
        context = ""
        if per_flop:
            best = min(per_flop, key=lambda r: r["train_over_infer_per_flop"])
            context = (
                f" Its training forward pass counts {best['train_forward_flops_ratio']:.2f}x "
                "the inference's FLOPs (the auxiliary head runs only in training); per FLOP "
                f"of forward pass the step is {best['train_over_infer_per_flop']:.2f}x "
                f"({best['backend']} b{best['batch']}, {variant}). The goal is judged on "
                "the plain ratio."
            )
        lines.append(
            f"(c) SANet-ResNet-50 OS8 training step <= {GOAL_TRAIN_RATIO}x one inference of "
            f"the same batch: {verdicts[variant]}; best variant {variant}: "
            f"{values}{_other_variants(verdicts, variant)}.{context}"
        )
    else:
        lines.append(f"(c) train/inference ratio: not measured ({SANET_OS8} not run).")
    return lines


def _cell(value, spec):
    return "—" if value is None else format(value, spec)


def _compute_dtype_cell(row):
    """The distinct compute dtypes of the row's conv and dense layers, e.g. `bfloat16`."""
    dtypes = sorted(set().union(*row.get("compute_dtypes", {}).values()))
    return "/".join(dtypes) or "—"


TABLE_HEADER = (
    "backend", "model", "variant", "compute dtype", "input", "batch", "OS", "images/s",
    "ms/image", "train step s", "train/infer", "train/infer per FLOP", "peak RSS MB",
    "GFLOPs/image", "GFLOP/s", "% matmul peak", "% peak paired", "executed GFLOPs/image",
    "% peak paired, executed", "vs DeepLabV3", "pipeline/train",
)


def markdown(rows, pipelines, toy):
    """The results table, the variants, the matmul peaks, the input pipeline and the goals."""
    header = TABLE_HEADER
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        model = row["model"]
        if row.get("backbone") and row["backbone"] not in model:  # --toy's stand-ins
            model += f" ({row['backbone']})"
        if row.get("export"):
            model += f" [{EXPORTS[row['export']][1]}]"
        if "infer" not in row:
            if "skipped" in row:
                message = f"skipped: {row['skipped']}"
            else:
                message = f"failed: {row.get('error', '?')}"
            cells = [row["backend"], model, row["variant"], _compute_dtype_cell(row), "",
                     row["batch"], "", message.replace("|", "/")]
            cells += [""] * (len(header) - len(cells))
            lines.append("| " + " | ".join(map(str, cells)) + " |")
            continue
        vs_peer = None
        if "vs_peer" in row:
            vs_peer = f"{row['vs_peer']:.2f}x"
            if row["output_stride"] != row["peer_output_stride"]:
                vs_peer += f" (OS{row['output_stride']} vs {row['peer_output_stride']})"
        flops = row.get("flops_per_image")
        fraction = row.get("fraction_of_matmul_peak")
        paired = row.get("fraction_of_matmul_peak_paired")
        of_peak = _cell(fraction and 100 * fraction, ".1f")
        of_peak_paired = _cell(paired and 100 * paired, ".1f")
        if fraction is not None and row["peak_dtype"] != "float32":
            of_peak += f" ({row['peak_dtype']})"  # of the peak in the row's compute dtype
            if paired is not None:
                of_peak_paired += f" ({row['peak_dtype']})"
        cells = (
            row["backend"], model, row["variant"], _compute_dtype_cell(row),
            "x".join(map(str, row["input_size"])), row["batch"],
            row["output_stride"], _cell(row["infer"]["images_per_second"], ".3g"),
            _cell(row["ms_per_image"], ".1f"), _cell(row.get("train", {}).get("median_s"), ".3g"),
            _cell(row.get("train_over_infer"), ".2f"),
            _cell(row.get("train_over_infer_per_flop"), ".2f"), _cell(row["peak_rss_mb"], ".0f"),
            _cell(flops and flops / 1e9, ".4g"), _cell(row.get("gflops_per_second"), ".3g"),
            of_peak, of_peak_paired,
            _cell(row.get("executed_flops_per_image") and row["executed_flops_per_image"] / 1e9,
                  ".4g"),
            _cell(row.get("executed_fraction_of_peak") and 100 * row["executed_fraction_of_peak"],
                  ".1f"),
            vs_peer or "—", _cell(row.get("pipeline_over_train"), ".2f"),
        )
        lines.append("| " + " | ".join(map(str, cells)) + " |")

    lines.append("")
    for variant in dict.fromkeys(row["variant"] for row in rows):
        lines.append(f"Variant {variant}: {VARIANTS[variant].description}.")
    lines.append("Ratios (vs DeepLabV3) pair rows of the same variant, backend, batch and input.")
    from flops import winograd_multiply_fraction

    sizes = sorted({m for row in rows if row.get("winograd")
                    for m in row.get("winograd_output_sizes", [])})
    shares = ", ".join(
        f"{fractions.Fraction(winograd_multiply_fraction(m)).limit_denominator(100)} for "
        f"F({m}x{m}, 3x3)" for m in sizes)
    lines.append(
        "% matmul peak: the median call's GFLOP/s over the best matmul timed before and after "
        "the whole measurement in the child process; "
        "% peak paired: each timed call's GFLOP/s over the best matmul timed right before "
        "or after it, median of the calls (the host's throughput can move for seconds at a "
        "time; goal (a) is judged on the paired figure). "
        "GFLOPs count every convolution as a direct one; executed GFLOPs count "
        "(m + 2)^2 / 9m^2 of them for the stride-1 3x3 convolutions a row runs as "
        "Winograd F(m x m, 3x3) (keras_sanet.layers.Conv2D on CPUs, exports excepted; "
        f"m is each layer's winograd_output_size{': ' + shares if shares else ''}; "
        "the tile transforms left out, as every layer's element-wise work), "
        "and % peak paired, executed scores those."
    )
    peaks = {}
    for row in rows:
        for dtype in ("float32", row.get("peak_dtype", "float32")):
            value = row.get(f"{matmul_key(dtype)}_peak_gflops")
            if value is not None:
                peaks.setdefault((row["backend"], dtype), set()).add(value)
    for (backend, dtype), values in peaks.items():
        source = "best of NumPy and Keras" if dtype == "float32" else "Keras"
        lines.append(f"Matmul peak ({backend} children, {dtype}, {source}): "
                     f"{min(values):.1f}-{max(values):.1f} GFLOP/s.")
    for pipeline in pipelines:
        crop = "x".join(map(str, pipeline["crop"]))
        if "images_per_second" in pipeline:
            lines.append(f"CamVid train input pipeline at {crop}, batch {pipeline['batch_size']}: "
                         f"{pipeline['images_per_second']:.3g} images/s "
                         "(pipeline/train: its images/s over the training step's).")
        else:
            lines.append(f"CamVid train input pipeline at {crop}: "
                         f"{pipeline.get('skipped') or pipeline.get('error')}.")
    lines += ["", "Goals (from the numbers above):", ""]
    if toy:
        lines.append("(--toy: tiny stand-in models; these verdicts say nothing about SANet.)")
    lines += [f"- {line}" for line in goals(rows)]
    return "\n".join(lines)


def _csv(choices):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(
                f"{unknown or text!r}: choose from {', '.join(choices)} (comma-separated)")
        return values

    return parse


def _int_list(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated positive integers")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="Models: " + ", ".join(MODELS)
    )
    parser.add_argument("--backends", type=_csv(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--models", type=_csv(tuple(MODELS)), default=list(MODELS))
    parser.add_argument("--variants", type=_csv(tuple(VARIANTS)), default=["default"],
                        help="comma-separated, each in its own children (default: default); "
                        + "; ".join(f"{name}: {v.description}" for name, v in VARIANTS.items()))
    parser.add_argument("--batch-sizes", type=_int_list, default=None,
                        help="comma-separated (default 1,8; --toy: 1)")
    parser.add_argument("--size", type=int, default=None,
                        help="square input of the ResNet-50 models (default 512; --toy: 64)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement, median reported (default 3; --toy: 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (compiles)")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="N of the NxN matmul peak (default 2048; --toy: 256)")
    parser.add_argument("--pipeline-batches", type=int, default=None,
                        help="timed input pipeline batches (default 20; --toy: 2)")
    parser.add_argument("--camvid-root", default=CAMVID_ROOT)
    parser.add_argument("--toy", action="store_true",
                        help="tiny models and sizes, one repeat: a smoke run")
    parser.add_argument("--exports", action="store_true",
                        help="also time the zoo model exported (SavedModel, TFLite, ONNX)")
    parser.add_argument("--json", default=os.path.join(BENCHMARKS_DIR, "results", "speed.json"))
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds one measurement may take")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    toy = args.toy
    defaults = dict(batch_sizes=[1] if toy else [1, 8], size=64 if toy else 512,
                    repeats=1 if toy else 3, matmul_size=256 if toy else 2048,
                    pipeline_batches=2 if toy else 20)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.child_out)
    if args.exports and not os.path.exists(os.path.join(REPO_ROOT, "keras_sanet", "export.py")):
        sys.exit(
            "--exports needs keras_sanet/export.py (export_model(model, path, format) and "
            "load_exported(path, format)), which this checkout lacks; run without --exports."
        )

    started = time.time()
    rows = []
    jobs = plan_jobs(args)
    for number, job in enumerate(jobs, 1):
        label = f"{job['backend']} {job['model']} {job['variant']} batch {job['batch']}"
        log(f"[{number}/{len(jobs)}] {label}" + (f" [{job['export']}]" if "export" in job else ""))
        if "skipped" in job:
            log(f"{label}: skipped ({job['skipped']})")
            result = {"skipped": job["skipped"]}
        else:
            result = run_child(job, job["backend"], args.timeout)
        rows.append({key: job[key] for key in ("backend", "model", "variant", "batch", "export")
                     if key in job} | result)

    # The pipeline is timed at every training input size the models used.
    crops = sorted({tuple(r["input_size"]) for r in rows if "train" in r})
    pipelines = []
    for crop in crops:
        job = dict(kind="pipeline", root=args.camvid_root, crop=list(crop),
                   batch=max(args.batch_sizes), batches=args.pipeline_batches, warmup=1)
        log(f"input pipeline at {crop[0]}x{crop[1]}")
        pipelines.append(run_child(job, "tensorflow", args.timeout) | {"crop": list(crop)})

    derive(rows, pipelines)
    table = markdown(rows, pipelines, args.toy)
    print(table)
    report = {
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": time.time() - started,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "arguments": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "flops_convention": "multiply-add = 2 FLOPs; Conv/DepthwiseConv/SeparableConv/"
                            "ConvTranspose/Dense layers only (benchmarks/flops.py)",
        "variants": {name: VARIANTS[name]._asdict() for name in args.variants},
        "rows": rows,
        "input_pipeline": pipelines,
        "goals": goals(rows),
        "table": table,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    log(f"wrote {args.json} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
