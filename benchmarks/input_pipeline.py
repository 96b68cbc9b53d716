"""Images per second of the CamVid training input pipeline (not run in CI).

Decoding, label remapping, random scale 0.5-2.0, pad, crop, flip and
batching, with no model attached: the rate the pipeline can feed.
`benchmarks/speed.py` calls `measure_pipeline` to set it beside the
training step's images/s.

    python benchmarks/input_pipeline.py --root ../shared/data/camvid --batches 50
"""

import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
DEFAULT_ROOT = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "camvid")


def measure_pipeline(
    root=DEFAULT_ROOT, crop=(360, 360), batch_size=8, batches=50, warmup=5, cache=False
):
    """Images per second the CamVid train pipeline delivers, with no model attached.

    Args:
        root: the CamVid folder (`train/`, `trainannot/`, `train.txt`, ...).
        crop: training crop `(height, width)`.
        batch_size: images per batch.
        batches: timed batches.
        warmup: untimed batches first (fills tf.data's prefetch buffers).
        cache: cache decoded images in memory.

    Returns:
        A dict with `images_per_second`, `images`, `seconds`, `crop`,
        `batch_size`, `cache` and the `last_batch_shape`.
    """
    # Imported here: benchmarks/speed.py imports this module without Keras or TensorFlow.
    from keras_sanet.data import camvid_dataset

    ds = camvid_dataset(
        root,
        "train",
        crop_size=tuple(crop),
        batch_size=batch_size,
        drop_remainder=True,
        repeat=True,
        seed=0,
        cache=cache,
        progress=False,
    )
    batches_iter = iter(ds.take(warmup + batches))
    for _ in range(warmup):
        next(batches_iter)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(batches_iter)
    seconds = time.perf_counter() - start
    count = batches * batch_size
    return {
        "images_per_second": count / seconds,
        "images": count,
        "seconds": seconds,
        "crop": list(crop),
        "batch_size": batch_size,
        "cache": cache,
        "last_batch_shape": list(images.shape),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--crop", type=int, nargs=2, default=(360, 360), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=50, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--cache", action="store_true", help="cache decoded images in memory")
    args = parser.parse_args()

    result = measure_pipeline(
        args.root, args.crop, args.batch_size, args.batches, args.warmup, args.cache
    )
    print(
        f"CamVid train pipeline, crop {args.crop[0]}x{args.crop[1]}, batch {args.batch_size}, "
        f"cache={args.cache}, {os.cpu_count()} CPUs: {result['images_per_second']:.1f} images/s "
        f"({result['images']} images in {result['seconds']:.2f} s; last batch "
        f"{tuple(result['last_batch_shape'])})"
    )


if __name__ == "__main__":
    main()
