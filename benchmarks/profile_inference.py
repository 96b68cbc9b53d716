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
    train_split  (TensorFlow) a training step split into training forward + loss,
              gradients and the update, against one inference, with and without
              the auxiliary head, beside the FLOPs of each forward pass.

    python benchmarks/profile_inference.py --probes unbuilt --size 64 --output-stride 32
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
    if backend == "jax":
        import jax

        compile_fn, sync = jax.jit, lambda y: y.block_until_ready()
    elif backend == "tensorflow":
        import tensorflow as tf

        compile_fn, sync = tf.function, lambda y: y.numpy()
    else:
        compile_fn, sync = (lambda f: f), (lambda y: y)
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


def probe_train_split(args):
    """Where a training step's time goes, against one inference (TensorFlow).

    Times, in CPU seconds of this process, four compiled functions of the same
    batch: the inference forward pass; the training forward pass with SANet's
    loss (auxiliary head, batch statistics); that plus its gradients; and
    Keras' whole `train_on_batch` (gradients and the SGD update). Once with the
    auxiliary head (the zoo's SANet) and once without, beside the FLOPs of each
    forward pass (`benchmarks/flops.py`).
    """
    import keras

    import keras_sanet
    from flops import count_flops

    if keras.backend.backend() != "tensorflow":
        log("train_split: TensorFlow only (it uses tf.GradientTape); skipped")
        return
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, 3)
    images = tf.constant(rng.uniform(0, 255, shape).astype("float32"))
    labels = tf.constant(rng.integers(0, 21, shape[:3]).astype("int32"))
    for auxiliary_head in (True, False):
        model = keras_sanet.SANet(
            backbone=args.backbone, num_classes=21, output_stride=args.output_stride,
            auxiliary_head=auxiliary_head,
        )
        model.build((None, args.size, args.size, 3))
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9), metrics=[]
        )
        variables = model.trainable_variables

        def training_loss(x, y):
            return model.compute_loss(x, y, model(x, training=True))

        def gradients(x, y):
            with tf.GradientTape() as tape:
                loss = training_loss(x, y)
            return tape.gradient(loss, variables)

        parts = {
            "inference": tf.function(lambda x, y: model(x, training=False)),
            "training forward + loss": tf.function(training_loss),
            "forward + gradients": tf.function(gradients),
            "train_on_batch": model.train_on_batch,
        }
        seconds = {}
        for name, fn in parts.items():
            fn(images, labels)  # traces / compiles
            seconds[name] = best_and_median(
                lambda: tf.nest.map_structure(np.asarray, fn(images, labels)),
                args.repeats, time.process_time,
            )[1]
        infer_flops = count_flops(model, shape)
        train_flops = count_flops(model, shape, training=True)
        head = "with" if auxiliary_head else "without"
        log(f"{args.backbone} OS{args.output_stride} {args.size}x{args.size} batch "
            f"{args.batch}, {head} the auxiliary head: GFLOPs inference "
            f"{infer_flops / 1e9:.1f}, training forward {train_flops / 1e9:.1f} "
            f"({train_flops / infer_flops:.2f}x)")
        for name, value in seconds.items():
            log(f"  {name}: {value:.3f} CPU s, {value / seconds['inference']:.2f}x inference")


PROBES = {
    "unbuilt": probe_unbuilt, "resize": probe_resize, "train_split": probe_train_split,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", default="unbuilt,resize",
                        help=f"comma-separated, of {', '.join(PROBES)}")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--output-stride", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1, help="train_split's batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    for name in args.probes.split(","):
        if name not in PROBES:
            parser.error(f"unknown probe {name!r}; choose from {', '.join(PROBES)}")
        PROBES[name](args)


if __name__ == "__main__":
    main()
