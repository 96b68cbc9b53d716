"""Profiling probes behind benchmarks/PROFILE.md (not run in CI).

Run under the backend to probe (`KERAS_BACKEND=jax python benchmarks/profile_inference.py`).
Only ratios measured in this one process mean anything on a shared machine.

    unbuilt   `predict_on_batch` of a toy SANet (ResNet-18) with every layer
              built, against the same model with the auxiliary dropout marked
              unbuilt (the state before SANetHeads.build built it): Keras' JAX
              trainer then runs an eager forward pass before each call.
    resize    bilinear upsampling of a class map: `keras.ops.image.resize`
              against keras_sanet's gather formulation (`bilinear_resize_gather`),
              each compiled (jax.jit, tf.function), with their max |difference|.
    train_split  (any backend) a training step split into training forward + loss,
              gradients and the update, against one inference, with and without
              the auxiliary head, beside the FLOPs of each forward pass.
    layers    where an inference's time goes: every leaf layer of SANet (conv,
              batch norm, activation, add, ...) compiled and timed alone on the
              input it gets inside the model, summed per layer class, with each
              convolution's GFLOP/s against a float32 matmul peak timed in the
              same process; beside the whole model's time.
    backward  where a training step's time goes: every leaf layer call of the
              training pass compiled alone, forward and forward + gradients,
              summed per layer class with each class's backward/forward ratio.
    pointwise SANet with its 1x1 convolutions run as matmuls (keras_sanet's
              Conv2D) against the same model on Keras' convolution, inference
              and training step timed in turn.
    filter_gradient  the same A/B for the kernel gradient of SANet's stride-1
              3x3 convolutions: one matmul per kernel tap against the backend's
              own gradient.
    depthwise the same A/B for MobileNetV2's depthwise convolutions: one
              multiply-add per kernel tap against `ops.depthwise_conv`.
    channels_first  the same A/B for the convolutions that are not matmuls: a
              channels-first view of the NHWC input (no copy on PyTorch) against
              Keras' channels-last `ops.conv`.

    python benchmarks/profile_inference.py --probes unbuilt --size 64 --output-stride 32
    python benchmarks/profile_inference.py --probes layers --backbone resnet50 \
        --size 512 --output-stride 8 [--jit-compile]
    python benchmarks/profile_inference.py --probes backward,pointwise,filter_gradient \
        --backbone resnet50 --size 512 --output-stride 8
"""

import argparse
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))  # flops.py


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def best_and_median(fn, repeats, clock=time.perf_counter):
    """`(best, median)` seconds of `repeats` calls; `clock=time.process_time`
    counts the CPU seconds of this process (all threads), which a starved
    process on a shared machine measures far more steadily than wall time."""
    seconds = []
    for _ in range(repeats):
        start = clock()
        fn()
        seconds.append(clock() - start)
    return min(seconds), float(np.median(seconds))


def probe_unbuilt(args):
    import keras

    import keras_sanet

    model = keras_sanet.SANet(
        backbone=args.backbone, num_classes=21, output_stride=args.output_stride
    )
    model.build((None, args.size, args.size, 3))
    model.compile(optimizer="sgd")
    unbuilt = [layer.name for layer in model._flatten_layers() if not layer.built]
    log(f"backend {keras.backend.backend()}, jit_compile {model.jit_compile}, "
        f"unbuilt layers after build: {unbuilt}")
    images = np.random.default_rng(0).uniform(0, 255, (1, args.size, args.size, 3))
    images = images.astype("float32")
    dropout = model.heads.aux_dropout_layer
    calls = []
    call = model.call

    def counting_call(*call_args, **call_kwargs):
        calls.append(1)
        return call(*call_args, **call_kwargs)

    model.call = counting_call  # counts traces and eager passes alike
    model.predict_on_batch(images)  # compiles
    for round_index in range(args.rounds):
        row = {}
        for state in ("built", "unbuilt"):
            dropout.built = state == "built"
            model.predict_on_batch(images)
            calls.clear()
            cpu = best_and_median(
                lambda: model.predict_on_batch(images), args.repeats, time.process_time
            )
            wall = best_and_median(lambda: model.predict_on_batch(images), args.repeats)
            row[state] = (cpu[1], wall[1], len(calls) / (2 * args.repeats))
        (cpu_b, wall_b, calls_b), (cpu_u, wall_u, calls_u) = row["built"], row["unbuilt"]
        log(f"round {round_index}: predict_on_batch median CPU s / wall s / SANet.call "
            f"runs per call: all layers built {cpu_b:.3f} / {wall_b:.3f} / {calls_b:g}; "
            f"aux dropout unbuilt {cpu_u:.3f} / {wall_u:.3f} / {calls_u:g}; "
            f"unbuilt/built CPU {cpu_u / cpu_b:.1f}x, wall {wall_u / wall_b:.1f}x")
    model.call = call
    dropout.built = True


def probe_resize(args):
    import keras
    from keras import ops

    from keras_sanet.layers.resize import bilinear_resize_gather

    backend = keras.backend.backend()
    compile_fn, sync = _compiler(jit_compile=False)
    rng = np.random.default_rng(0)
    for source, target in ((args.size // 8, args.size // 4), (args.size // 4, args.size)):
        x = ops.convert_to_tensor(
            rng.standard_normal((1, source, source, 21)).astype("float32")
        )
        resize = compile_fn(
            lambda x: ops.image.resize(x, (target, target), "bilinear", antialias=False)
        )
        gather = compile_fn(lambda x: bilinear_resize_gather(x, (target, target)))
        diff = np.max(np.abs(ops.convert_to_numpy(resize(x)) - ops.convert_to_numpy(gather(x))))
        sync(gather(x))
        resize_s = best_and_median(lambda: sync(resize(x)), args.repeats)[0]
        gather_s = best_and_median(lambda: sync(gather(x)), args.repeats)[0]
        log(f"{backend} {source}->{target} x21: image.resize {resize_s * 1e3:.2f} ms, "
            f"gather {gather_s * 1e3:.2f} ms, gather/resize {gather_s / resize_s:.2f}, "
            f"max|diff| {diff:.1e}")


def _training_parts(model, images, labels, compile_fn):
    """`{part: function}` of `probe_train_split`, each returning what has to be
    waited for. The forward passes and TensorFlow's and JAX's gradients go
    through `compile_fn` (`_compiler`: tf.function, jax.jit of stateless calls,
    PyTorch under no_grad); PyTorch's gradients run eagerly."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variables = model.trainable_variables

        def training_loss(x, y):
            return model.compute_loss(x, y, model(x, training=True))

        def gradients(x, y):
            with tf.GradientTape() as tape:
                loss = training_loss(x, y)
            return tape.gradient(loss, variables)

        inference = compile_fn(lambda x: model(x, training=False))
        training_loss, gradients = compile_fn(training_loss), compile_fn(gradients)
        parts = {
            "inference": lambda: inference(images),
            "training forward + loss": lambda: training_loss(images, labels),
            "forward + gradients": lambda: gradients(images, labels),
        }
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        # Copies: train_on_batch donates the variables' buffers to its update.
        def values(variables):
            return [jnp.array(v.value) for v in variables]

        trainable, non_trainable = values(model.trainable_variables), values(
            model.non_trainable_variables)
        metrics, optimizer = values(model.metrics_variables), values(model.optimizer.variables)

        def training_loss(trainable, non_trainable, x, y):
            return model.compute_loss_and_updates(
                trainable, non_trainable, metrics, x, y, None, training=True,
                optimizer_variables=optimizer,
            )[0]

        inference = compile_fn(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
        loss, gradients = compile_fn(training_loss), compile_fn(jax.grad(training_loss))
        parts = {
            "inference": lambda: inference(trainable, non_trainable, images),
            "training forward + loss": lambda: loss(trainable, non_trainable, images, labels),
            "forward + gradients": lambda: gradients(trainable, non_trainable, images, labels),
        }
    else:
        import torch

        def training_loss():
            return model.compute_loss(images, labels, model(images, training=True))

        def gradients():
            weights = [v.value for v in model.trainable_variables]
            return torch.autograd.grad(training_loss(), weights)

        parts = {
            "inference": compile_fn(lambda: model(images, training=False)),
            "training forward + loss": compile_fn(training_loss),
            "forward + gradients": gradients,
        }

    def train_on_batch():
        model.train_on_batch(images, labels)
        return ()  # its loss comes back as NumPy: nothing to wait for

    parts["train_on_batch"] = train_on_batch
    return parts


def probe_train_split(args):
    """Where a training step's time goes, against one inference (any backend).

    Times, in CPU seconds of this process, four functions of the same batch
    (`_training_parts`): the inference forward pass; the training forward
    pass with SANet's loss (auxiliary head, batch statistics); that plus its
    gradients; and Keras' whole `train_on_batch` (gradients and the SGD
    update). Once with the auxiliary head (the zoo's SANet) and once without,
    beside the FLOPs of each forward pass (`benchmarks/flops.py`).
    """
    import keras

    import keras_sanet
    from flops import count_flops

    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, 3)
    images = keras.ops.convert_to_tensor(rng.uniform(0, 255, shape).astype("float32"))
    labels = keras.ops.convert_to_tensor(rng.integers(0, 21, shape[:3]).astype("int32"))
    compile_fn, wait = _compiler(jit_compile=None)
    summary = {}
    for auxiliary_head in (True, False):
        model = keras_sanet.SANet(
            backbone=args.backbone, num_classes=21, output_stride=args.output_stride,
            auxiliary_head=auxiliary_head,
        )
        model.build((None, args.size, args.size, 3))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9), metrics=[]
        )
        model.train_on_batch(images, labels)  # compiles; builds the optimizer's variables
        seconds = {}
        for name, fn in _training_parts(model, images, labels, compile_fn).items():
            wait(fn())  # traces / compiles
            seconds[name] = best_and_median(lambda: wait(fn()), args.repeats,
                                            time.process_time)[1]
        infer_flops = count_flops(model, shape)
        train_flops = count_flops(model, shape, training=True)
        head = "with" if auxiliary_head else "without"
        log(f"{keras.backend.backend()}: {args.backbone} OS{args.output_stride} "
            f"{args.size}x{args.size} batch {args.batch}, {head} the auxiliary head: GFLOPs "
            f"inference {infer_flops / 1e9:.1f}, training forward {train_flops / 1e9:.1f} "
            f"({train_flops / infer_flops:.2f}x)")
        for name, value in seconds.items():
            log(f"  {name}: {value:.3f} CPU s, {value / seconds['inference']:.2f}x inference")
        summary[head] = {name: value / seconds["inference"] for name, value in seconds.items()}
    return summary


def _compiler(jit_compile):
    """`(compile, wait)` for the backend: how to compile a function and wait for its result."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit, lambda y: keras.tree.map_structure(lambda t: t.block_until_ready(), y)
    if backend == "tensorflow":
        import tensorflow as tf

        return (lambda f: tf.function(f, jit_compile=jit_compile)), (
            lambda y: keras.tree.map_structure(np.asarray, y)
        )
    import torch

    def no_grad(f):
        def run(*xs):
            with torch.no_grad():
                return f(*xs)

        return run

    return no_grad, lambda y: y


def _leaf_layers(model):
    return [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)
        if not list(layer._flatten_layers(include_self=False, recursive=False))
    ]


class _TensorSpec:
    """Shape and dtype of a recorded layer input (a leaf for `keras.tree`)."""

    def __init__(self, tensor):
        import keras

        self.shape = tuple(int(d) for d in tensor.shape)
        self.dtype = keras.backend.standardize_dtype(tensor.dtype)

    def random(self, rng):
        import keras

        return keras.ops.convert_to_tensor(rng.standard_normal(self.shape).astype(self.dtype))


def _is_tensor(value):
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _probe_sanet(args, shape):
    """The probes' SANet: `--backbone`, `--output-stride`, 21 classes, built for
    `shape` (which creates the heads' layers)."""
    import keras_sanet

    model = keras_sanet.SANet(
        backbone=args.backbone, num_classes=21, output_stride=args.output_stride
    )
    model.build(shape)
    return model


def _random_inputs(spec, rng):
    """Random tensors in place of the `_TensorSpec`s of a recorded call's inputs."""
    import keras

    return keras.tree.map_structure(
        lambda v: v.random(rng) if isinstance(v, _TensorSpec) else v, spec
    )


def _recorded_calls(model, shape, training=False):
    """`(layer, input spec, args, kwargs, FLOPs)` of every leaf layer call in a
    symbolic forward pass of `model` (the training pass with `training=True`)."""
    import keras

    from flops import call_flops
    from flops import recording_calls
    from flops import trace

    calls = []

    def on_call(layer, inputs, call_args, call_kwargs, outputs):
        spec = keras.tree.map_structure(
            lambda v: _TensorSpec(v) if _is_tensor(v) else v, inputs
        )
        calls.append((layer, spec, call_args, call_kwargs, call_flops(layer, inputs, outputs)))

    trace(model, shape, training=training)  # builds what builds lazily
    with recording_calls(_leaf_layers(model), on_call):
        trace(model, shape, records=calls, training=training)
    return calls


def _sum_per_class(rows, fields):
    """`{layer class: {"calls": n, field: sum, ...}}` of `(layer, input shape, *values)`
    rows whose values are named by `fields`."""
    by_class = {}
    for layer, _, *values in rows:
        entry = by_class.setdefault(type(layer).__name__, dict.fromkeys(("calls", *fields), 0))
        entry["calls"] += 1
        for field, value in zip(fields, values):
            entry[field] += value
    return by_class


def probe_layers(args):
    """Per-layer time of one inference, summed per layer class (any backend).

    Every leaf layer's call during a symbolic forward pass is recorded with its
    input shapes; each call is then compiled alone (tf.function, with
    `--jit-compile` XLA; jax.jit; eager PyTorch under no_grad) and timed on
    random inputs of those shapes (best of `--repeats`, wall seconds: run it on
    an idle machine). Ops a layer's `call` runs outside sublayers (SANet's
    pooling and resizes in the attention branch, the final resize) and whatever
    the whole-model compile fuses away show up as the difference between the
    summed layers and the whole model.
    """
    import keras

    from speed import matmul_gflops

    compile_fn, wait = _compiler(args.jit_compile)
    rng = np.random.default_rng(0)
    shape = (1, args.size, args.size, 3)
    model = _probe_sanet(args, shape)
    calls = _recorded_calls(model, shape)
    images = keras.ops.convert_to_tensor(rng.uniform(0, 255, shape).astype("float32"))
    whole = compile_fn(lambda x: model(x, training=False))
    wait(whole(images))
    whole_s = best_and_median(lambda: wait(whole(images)), args.repeats)[0]
    peak_before = max(matmul_gflops(2048).values())
    rows = []
    for layer, spec, call_args, call_kwargs, flops in calls:
        inputs = _random_inputs(spec, rng)
        # The layer's own `call`, with the arguments Keras passed it inside the model.
        fn = compile_fn(
            lambda x, call=layer.call, a=call_args, k=call_kwargs: call(x, *a, **k)
        )
        wait(fn(inputs))
        seconds = best_and_median(lambda: wait(fn(inputs)), args.repeats)[0]
        first = keras.tree.flatten(spec)[0]
        rows.append((layer, getattr(first, "shape", first), seconds, flops))
    # The best of matmuls timed before and after: this host's throughput moves for seconds.
    peak = max(peak_before, *matmul_gflops(2048).values())
    layers_s = sum(seconds for _, _, seconds, _ in rows)
    total_flops = sum(flops for *_, flops in rows)
    backend = keras.backend.backend()
    log(f"{backend}{' jit_compile' if args.jit_compile else ''}: SANet {args.backbone} "
        f"OS{args.output_stride} {args.size}x{args.size}, batch 1: whole model "
        f"{whole_s * 1e3:.0f} ms ({total_flops / whole_s / 1e9:.0f} GFLOP/s, "
        f"{100 * total_flops / whole_s / 1e9 / peak:.1f} % of a {peak:.0f} GFLOP/s "
        f"float32 matmul); {len(rows)} leaf layer calls timed alone sum to "
        f"{layers_s * 1e3:.0f} ms ({layers_s / whole_s:.2f}x the whole model)")
    by_class = _sum_per_class(rows, ("seconds", "flops"))
    log("  | layer class | calls | ms | share of summed layers | GFLOP/s | % of matmul peak |")
    log("  | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, entry in sorted(by_class.items(), key=lambda kv: -kv[1]["seconds"]):
        count, seconds, flops = entry["calls"], entry["seconds"], entry["flops"]
        gflops = flops / seconds / 1e9
        rate = f"{gflops:.0f} | {100 * gflops / peak:.1f}" if flops else "- | -"
        log(f"  | {name} | {count} | {seconds * 1e3:.1f} | "
            f"{100 * seconds / layers_s:.1f} % | {rate} |")
    log(f"  the {args.top} slowest calls:")
    for layer, first, seconds, flops in sorted(rows, key=lambda row: -row[2])[: args.top]:
        gflops = flops / seconds / 1e9
        rate = f", {gflops:.0f} GFLOP/s ({100 * gflops / peak:.1f} %)" if flops else ""
        log(f"    {layer.path} ({type(layer).__name__}) on {first}: "
            f"{seconds * 1e3:.1f} ms{rate}")
    return {
        "whole_s": whole_s, "flops": total_flops, "matmul_gflops": peak, "by_class": by_class,
    }


def _backward_compiler(jit_compile):
    """`make(layer, call)` compiles `f(inputs, cotangents)` giving the
    gradients of `sum(call(inputs) * cotangents)` with respect to the inputs and
    to `call`'s layer's trainable weights: one call's share of a training step's
    backward pass (its forward included). Wait for its result with `_compiler`'s."""
    import keras

    backend = keras.backend.backend()

    def dot(outputs, cotangents):
        return sum(
            keras.ops.sum(o * c)
            for o, c in zip(keras.tree.flatten(outputs), keras.tree.flatten(cotangents))
        )

    if backend == "jax":
        import jax

        def make(layer, call):
            non_trainable = [v.value for v in layer.non_trainable_variables]

            def loss(trainable, inputs, cotangents):
                # Keras' stateless_call, for `call` (the recorded arguments bound).
                mapping = list(zip(layer.trainable_variables, trainable))
                mapping += list(zip(layer.non_trainable_variables, non_trainable))
                with keras.StatelessScope(state_mapping=mapping):
                    return dot(call(inputs), cotangents)

            grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
            trainable = [v.value for v in layer.trainable_variables]
            return lambda inputs, cotangents: grad(trainable, inputs, cotangents)

        return make
    if backend == "tensorflow":
        import tensorflow as tf

        def make(layer, call):
            @tf.function(jit_compile=jit_compile)
            def grad(inputs, cotangents):
                with tf.GradientTape() as tape:
                    tape.watch(inputs)
                    loss = dot(call(inputs), cotangents)
                return tape.gradient(loss, [inputs, layer.trainable_variables])

            return grad

        return make
    import torch

    def make(layer, call):
        params = [v.value for v in layer.trainable_variables]

        def grad(inputs, cotangents):
            leaves = keras.tree.map_structure(
                lambda t: t.detach().requires_grad_(True), inputs
            )
            loss = dot(call(leaves), cotangents)
            return torch.autograd.grad(loss, keras.tree.flatten(leaves) + params)

        return grad

    return make


def probe_backward(args):
    """Per-layer time of a training step's forward + backward pass, against the
    same calls' forward pass alone, summed per layer class (any backend).

    Every leaf layer call of SANet's training forward pass (auxiliary head, batch
    statistics) is compiled alone twice: its forward pass, and its forward pass
    with the gradients of `sum(outputs * random cotangents)` with respect to its
    inputs and trainable weights (jax.grad under jax.jit; tf.GradientTape in a
    tf.function, XLA with `--jit-compile`; torch.autograd eagerly). A layer class
    whose backward/forward ratio stands far above ~3 is where a backend's
    gradient kernels, not the model's arithmetic, make its training step slow.
    """
    import keras

    compile_fn, wait = _compiler(args.jit_compile)
    make_backward = _backward_compiler(args.jit_compile)
    rng = np.random.default_rng(0)
    shape = (1, args.size, args.size, 3)
    model = _probe_sanet(args, shape)
    calls = _recorded_calls(model, shape, training=True)
    rows = []
    for layer, spec, call_args, call_kwargs, flops in calls:
        inputs = _random_inputs(spec, rng)

        def call(x, call=layer.call, a=call_args, k=call_kwargs):
            return call(x, *a, **k)

        def stateless_call(x, call=call):
            # Batch norm's training call assigns its moving statistics: keep them
            # inside the compiled function (a jax.jit would leak its tracers).
            with keras.StatelessScope():
                return call(x)

        forward = compile_fn(stateless_call)
        outputs = wait(forward(inputs))
        cotangents = keras.tree.map_structure(
            lambda o: _TensorSpec(o).random(rng), outputs
        )
        backward = make_backward(layer, call)
        wait(backward(inputs, cotangents))
        forward_s = best_and_median(lambda: wait(forward(inputs)), args.repeats)[0]
        backward_s = best_and_median(
            lambda: wait(backward(inputs, cotangents)), args.repeats
        )[0]
        first = keras.tree.flatten(spec)[0]
        rows.append((layer, getattr(first, "shape", first), forward_s, backward_s, flops))
    forward_total = sum(row[2] for row in rows)
    backward_total = sum(row[3] for row in rows)
    backend = keras.backend.backend()
    log(f"{backend}{' jit_compile' if args.jit_compile else ''}: SANet {args.backbone} "
        f"OS{args.output_stride} {args.size}x{args.size}, batch 1, training pass: "
        f"{len(rows)} leaf layer calls; forward alone {forward_total * 1e3:.0f} ms, "
        f"forward + backward {backward_total * 1e3:.0f} ms "
        f"({backward_total / forward_total:.2f}x)")
    by_class = _sum_per_class(rows, ("forward_s", "backward_s", "flops"))
    log("  | layer class | calls | forward ms | forward + backward ms "
        "| share of summed forward + backward | (forward + backward) / forward |")
    log("  | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, entry in sorted(by_class.items(), key=lambda kv: -kv[1]["backward_s"]):
        count, forward_s, backward_s = entry["calls"], entry["forward_s"], entry["backward_s"]
        log(f"  | {name} | {count} | {forward_s * 1e3:.1f} | {backward_s * 1e3:.1f} | "
            f"{100 * backward_s / backward_total:.1f} % | {backward_s / forward_s:.2f}x |")
    log(f"  the {args.top} slowest forward + backward calls:")
    for layer, first, forward_s, backward_s, _ in sorted(rows, key=lambda r: -r[3])[: args.top]:
        log(f"    {layer.path} ({type(layer).__name__}) on {first}: forward "
            f"{forward_s * 1e3:.1f} ms, forward + backward {backward_s * 1e3:.1f} ms "
            f"({backward_s / forward_s:.1f}x)")
    return {
        "forward_s": forward_total, "backward_s": backward_total,
        "flops": sum(row[4] for row in rows), "by_class": by_class,
    }


def probe_pointwise(args):
    """SANet with its 1x1 convolutions as matmuls (keras_sanet's Conv2D) against
    the same model running Keras' convolution for them (any backend).

    Two SANets with the same seed and weights; `pointwise_as_matmul` turned off
    on every keras_sanet Conv2D of the second. See `_switch_ab`.
    """
    return _switch_ab(args, "pointwise_as_matmul", "runs_as_matmul",
                      "convolutions run as matmuls")


def probe_filter_gradient(args):
    """SANet whose stride-1 3x3 (and larger odd) convolutions take their kernel
    gradient as matmuls, one per kernel tap, against the same model taking the
    backend's (any backend; inference is the same computation in both).

    `filter_gradient_as_matmul` turned off on every keras_sanet Conv2D of the
    second model. See `_switch_ab`.
    """
    return _switch_ab(args, "filter_gradient_as_matmul", "filter_gradient_runs_as_matmul",
                      "convolutions take their kernel gradient as matmuls")


def probe_depthwise(args):
    """SANet whose depthwise convolutions (MobileNetV2's) run as one multiply-add
    per kernel tap against the same model on `ops.depthwise_conv` (any backend).

    `depthwise_as_multiply_adds` turned off on every keras_sanet
    DepthwiseConv2D of the second model. See `_switch_ab`.
    """
    return _switch_ab(args, "depthwise_as_multiply_adds", "runs_as_multiply_adds",
                      "depthwise convolutions run as multiply-adds")


def probe_channels_first(args):
    """SANet whose convolutions that are not matmuls run on a channels-first view
    of their NHWC input against the same model on Keras' channels-last
    `ops.conv`, which copies the input to NCHW and then to PyTorch's
    channels-last layout (any backend but TensorFlow, whose CPU kernels have no
    channels-first convolution; the default on PyTorch only).

    `convolve_channels_first` turned off on every keras_sanet Conv2D and
    DepthwiseConv2D of the second model. See `_switch_ab`.
    """
    return _switch_ab(args, "convolve_channels_first", "runs_channels_first",
                      "convolutions run on a channels-first view")


def probe_winograd(args):
    """SANet whose float32 stride-1 "same" 3x3 convolutions run as Winograd
    (F(4x4, 3x3) by default) against the same model on the backend's convolutions (any
    backend; the default where no GPU or TPU is visible).

    `winograd` turned off on every keras_sanet Conv2D of the second model.
    See `_switch_ab`.
    """
    from keras_sanet.layers.conv2d import WINOGRAD_MIN_CHANNELS
    from keras_sanet.layers.conv2d import WINOGRAD_MIN_PIXELS

    return _switch_ab(args, "winograd", "winograd_applies",
                      "convolutions are float32 stride-1 3x3 (those of at least "
                      f"{WINOGRAD_MIN_PIXELS} pixels and {WINOGRAD_MIN_CHANNELS} channels "
                      "run as Winograd)")


def probe_winograd_f4(args):
    """SANet whose Winograd convolutions run as F(4x4, 3x3) (6x6 tiles, 36
    matmuls) against the same model with F(2x2, 3x3) (any backend).

    `winograd_output_size` 2 on every keras_sanet Conv2D of the first model, 4
    on the second. See `_switch_ab`.
    """
    return _switch_ab(args, "winograd_output_size", "winograd_applies",
                      "convolutions are float32 stride-1 3x3 (Winograd takes those of "
                      "at least its floors' pixels and channels)", values=(2, 4))


def probe_winograd_matmuls(args):
    """SANet whose Winograd tile transforms are one matmul each (the tiles
    gathered, then `(tile^2, tile^2)` and `(m^2, tile^2)` matrices) against the
    same model with the transforms as sums slice by slice (any backend).

    `winograd_transforms_as_matmuls` False on every keras_sanet Conv2D of the
    first model, True on the second. See `_switch_ab`.
    """
    return _switch_ab(args, "winograd_transforms_as_matmuls", "winograd_applies",
                      "convolutions are float32 stride-1 3x3 (Winograd takes those of "
                      "at least its floors' pixels and channels)")


def probe_winograd_layers(args):
    """Every distinct convolution that Winograd takes in SANet's
    training pass, timed alone with its `winograd` switch off and on in turn:
    the forward pass, and forward + backward (the gradients of the input and
    the weights of `sum(outputs * random cotangents)`), compiled as in the
    `backward` probe (any backend; wall time, best of `--repeats` per round).
    """
    compile_fn, wait = _compiler(args.jit_compile)
    make_backward = _backward_compiler(args.jit_compile)
    rng = np.random.default_rng(0)
    shape = (1, args.size, args.size, 3)
    model = _probe_sanet(args, shape)
    distinct = {}
    for layer, spec, call_args, call_kwargs, flops in _recorded_calls(model, shape, True):
        if getattr(layer, "winograd_applies", False) and layer.winograd_takes(spec):
            key = (spec.shape, layer.filters, tuple(layer.dilation_rate))
            distinct.setdefault(key, (layer, spec, flops))
    log(f"SANet {args.backbone} OS{args.output_stride} {args.size}x{args.size}: "
        f"{len(distinct)} distinct convolutions Winograd takes")
    log("  | input | filters | dilation | forward ms, off -> on | speed-up "
        "| forward + backward ms, off -> on | speed-up |")
    log("  | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for (input_shape, filters, rates), (layer, spec, flops) in distinct.items():
        inputs = spec.random(rng)
        cotangents = _TensorSpec(layer.compute_output_spec(inputs)).random(rng)
        timed = {}
        for winograd in (False, True):
            # Each state compiles its own functions (a trace reads the switch). A
            # new closure each time: jax.jit reuses the traces of an equal
            # function, and two `layer.call`s of one layer are equal.
            layer.winograd = winograd
            forward = compile_fn(lambda x: layer.call(x))
            backward = make_backward(layer, layer.call)
            wait(forward(inputs)), wait(backward(inputs, cotangents))
            timed[winograd] = (forward, backward)
        seconds = {(w, part): [] for w in (False, True) for part in (0, 1)}
        for _ in range(args.rounds):
            for winograd, functions in timed.items():
                layer.winograd = winograd  # PyTorch reads it at every call
                seconds[winograd, 0].append(best_and_median(
                    lambda: wait(functions[0](inputs)), args.repeats)[0])
                seconds[winograd, 1].append(best_and_median(
                    lambda: wait(functions[1](inputs, cotangents)), args.repeats)[0])
        layer.winograd = True
        best = {key: min(values) for key, values in seconds.items()}
        row = dict(input=list(input_shape), filters=filters, dilation=list(rates),
                   flops=flops, forward_s=(best[False, 0], best[True, 0]),
                   backward_s=(best[False, 1], best[True, 1]))
        rows.append(row)
        log(f"  | {'x'.join(map(str, input_shape[1:]))} | {filters} | {rates[0]} | "
            f"{1e3 * best[False, 0]:.1f} -> {1e3 * best[True, 0]:.1f} | "
            f"{best[False, 0] / best[True, 0]:.2f}x | {1e3 * best[False, 1]:.1f} -> "
            f"{1e3 * best[True, 1]:.1f} | {best[False, 1] / best[True, 1]:.2f}x |")
    return rows


def _switch_ab(args, switch, applies, what, values=(False, True)):
    """Times SANet with a keras_sanet layer switch on ("on") against off ("off").

    `values`: the switch's settings for "off" and "on".

    Two SANets with the same seed and weights. After an untimed round, each round times
    `predict_on_batch` and `train_on_batch` of one model, then of the other, so
    that both see the same moment of this host (wall seconds); prints the
    medians, the per-round speed-ups and how far the two models' logits differ.
    """
    import keras

    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, 3)
    images = rng.uniform(0, 255, shape).astype("float32")
    labels = rng.integers(0, 21, shape[:3]).astype("int32")
    models = {}
    for name in ("off", "on"):
        keras.utils.set_random_seed(0)
        model = _probe_sanet(args, shape)
        # keras_sanet's Conv2D or DepthwiseConv2D, whichever has the switch.
        convolutions = [layer for layer in model._flatten_layers() if hasattr(layer, switch)]
        for layer in convolutions:
            setattr(layer, switch, values[name == "on"])
        # The network alone, as in speed.py: SANet's default metrics ran in these
        # A/Bs until PROFILE.md section 10 (on PyTorch, seconds of each step).
        model.compile(optimizer=keras.optimizers.SGD(1e-4, momentum=0.9), metrics=[])
        logits = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(images)))
        model.train_on_batch(images, labels)  # compiles
        models[name] = (model, logits)
    # Both models have the same layers; the last built, "on", has the switch on.
    count = sum(getattr(layer, applies) for layer in convolutions)
    reference, logits = models["off"][1], models["on"][1]
    seconds = {name: {"inference": [], "training step": []} for name in models}
    # Round 0 is untimed: on TensorFlow the first model's first calls after the
    # second was built ran up to 15x slower (MobileNetV2, 20 rounds).
    for round_index in range(args.repeats + 1):
        for name, (model, _) in models.items():
            for part, run in (("inference", lambda: model.predict_on_batch(images)),
                              ("training step", lambda: model.train_on_batch(images, labels))):
                start = time.perf_counter()
                run()
                if round_index:
                    seconds[name][part].append(time.perf_counter() - start)
    backend = keras.backend.backend()
    log(f"{backend}: SANet {args.backbone} OS{args.output_stride} {args.size}x{args.size} "
        f"batch {args.batch}, {count} of {len(convolutions)} {what} ({switch}); "
        f"logits max |difference| {np.abs(logits - reference).max():.2e} "
        f"(largest |logit| {np.abs(reference).max():.1f})")
    result = {}
    for part in ("inference", "training step"):
        before = np.asarray(seconds["off"][part])
        after = np.asarray(seconds["on"][part])
        result[part] = float(np.median(before) / np.median(after))
        log(f"  {part}: {switch}={values[0]} {np.median(before):.2f} s, "
            f"{values[1]} {np.median(after):.2f} s "
            f"(medians of {args.repeats}); speed-up {result[part]:.2f}x, per round "
            + ", ".join(f"{r:.2f}x" for r in before / after))
    return result


PROBES = {
    "unbuilt": probe_unbuilt, "resize": probe_resize, "train_split": probe_train_split,
    "layers": probe_layers, "backward": probe_backward, "pointwise": probe_pointwise,
    "filter_gradient": probe_filter_gradient, "depthwise": probe_depthwise,
    "channels_first": probe_channels_first, "winograd": probe_winograd,
    "winograd_layers": probe_winograd_layers, "winograd_f4": probe_winograd_f4,
    "winograd_matmuls": probe_winograd_matmuls,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", default="unbuilt,resize",
                        help=f"comma-separated, of {', '.join(PROBES)}")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--output-stride", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1,
                        help="train_split's and the A/B probes' batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jit-compile", action="store_true",
                        help="layers: compile with XLA on TensorFlow (always on JAX)")
    parser.add_argument("--top", type=int, default=12, help="layers: slowest calls listed")
    args = parser.parse_args(argv)
    names = args.probes.split(",")
    for name in names:
        if name not in PROBES:
            parser.error(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
    return {name: PROBES[name](args) for name in names}


if __name__ == "__main__":
    main()
