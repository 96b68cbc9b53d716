"""The `keras-sanet` command: train, eval, predict, attention, ablation, export, and more."""

import argparse
import importlib
import sys

from keras_sanet import cpu_malloc

# subcommand -> (module, help). Each module has `add_arguments(parser)` and `run(args)`.
COMMANDS = {
    "train": ("keras_sanet.training.command", "train a SANet from a TOML config (resumes)"),
    "eval": ("keras_sanet.evaluation.command", "evaluate weights or a preset on a split"),
    "predict": ("keras_sanet.prediction.command", "segment images: colour masks and overlays"),
    "attention": (
        "keras_sanet.prediction.attention_command",
        "draw SA-head attention maps for chosen points (the paper's Figure 6)",
    ),
    "ablation": (
        "keras_sanet.evaluation.ablation",
        "train and score every row of a paper table, write it in the paper's layout",
    ),
    "export": (
        "keras_sanet.export_command",
        "export as a SavedModel, TFLite or ONNX file and check it against Keras",
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-sanet",
        description="SANet semantic segmentation on Keras 3 (TensorFlow, JAX, PyTorch).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


# Long CPU jobs that start themselves again with glibc's malloc tunables
# (keras_sanet/cpu_malloc.py; SANet-R50 OS8 on the 2-core CPU: PyTorch's training
# step 1.33x faster, JAX's inference 1.12x and its training step 1.08x).
RESTARTED_WITH_MALLOC_TUNABLES = ("train", "eval", "ablation")


def main(argv=None):
    # Only the program itself restarts (argv None); a call from Python code never does.
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if (
        argv is None
        and command in RESTARTED_WITH_MALLOC_TUNABLES
        and cpu_malloc.should_restart()
    ):
        cpu_malloc.restart_with_tunables(sys.argv[1:])
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return module.run(args) or 0
    except ValueError as error:
        # Our errors say what is wrong and how to fix it: print them without a traceback.
        print(f"keras-sanet {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
