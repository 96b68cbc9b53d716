"""`keras-sanet train CONFIG [--set section.key=value ...]`."""


def add_arguments(parser):
    parser.add_argument("config", help="TOML file with [data], [model] and [train] sections")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=2 (repeatable)",
    )
    parser.add_argument(
        "--distribution",
        choices=("none", "mirrored", "data_parallel", "auto"),
        help="multi-device training: 'mirrored' (TensorFlow MirroredStrategy, "
        "synchronized batch norm), 'data_parallel' (JAX) or 'auto' (whichever fits the "
        "backend when several GPUs are visible); overrides train.distribution",
    )
    parser.add_argument(
        "--output-dir", help="where checkpoints and logs go; overrides train.output_dir"
    )
    parser.add_argument(
        "--verbose",
        default="auto",
        choices=("auto", "0", "1", "2"),
        help="Keras fit verbosity: auto, 0 (silent), 1 (progress bar), 2 (one line per epoch)",
    )


def run(args):
    from keras_sanet.training.config import load_config
    from keras_sanet.training.config import validate_config
    from keras_sanet.training.trainer import train

    config = load_config(args.config, args.overrides)
    # Set directly, not as TOML text: paths may hold quotes or backslashes.
    if args.distribution:
        config.train.distribution = args.distribution
    if args.output_dir:
        config.train.output_dir = args.output_dir
    validate_config(config, args.config)
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    train(config, verbose=verbose)
    print(f"Finished: {config.train.output_dir}/model.keras")
    return 0
