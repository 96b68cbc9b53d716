"""Images per second of the CamVid training input pipeline (not run in CI).

Decoding, label remapping, random scale 0.5-2.0, pad, crop, flip and
batching, with no model attached: the rate the pipeline can feed.

    python benchmarks/input_pipeline.py --root ../shared/data/camvid --batches 50
"""

import argparse
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from keras_sanet.data import camvid_dataset  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", default=os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "camvid")
    )
    parser.add_argument("--crop", type=int, nargs=2, default=(360, 360), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=50, help="timed batches")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--cache", action="store_true", help="cache decoded images in memory")
    args = parser.parse_args()

    ds = camvid_dataset(
        args.root,
        "train",
        crop_size=tuple(args.crop),
        batch_size=args.batch_size,
        drop_remainder=True,
        repeat=True,
        seed=0,
        cache=args.cache,
        progress=False,
    )
    batches = iter(ds.take(args.warmup + args.batches))
    for _ in range(args.warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(args.batches):
        images, _ = next(batches)
    seconds = time.perf_counter() - start
    count = args.batches * args.batch_size
    print(
        f"CamVid train pipeline, crop {args.crop[0]}x{args.crop[1]}, batch {args.batch_size}, "
        f"cache={args.cache}, {os.cpu_count()} CPUs: {count / seconds:.1f} images/s "
        f"({count} images in {seconds:.2f} s; last batch {tuple(images.shape)})"
    )


if __name__ == "__main__":
    main()
