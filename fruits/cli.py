"""`fruits` command line: run, featurize, pca (Spark); s3 and emr (AWS)."""

from __future__ import annotations

import argparse
import sys
import traceback

from fruits import emr, s3
from fruits.argtypes import fraction, positive_int
from fruits.config import ENGINES, MODES, PRECISIONS, Config, ConfigError

EXIT_USAGE = 2
EXIT_FAILED = 1
DEFAULTS = Config()  # one source of defaults for the CLI, notebooks and EMR steps


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, exit code 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _spark_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("spark and diagnostics")
    group.add_argument("--master", help="Spark master for a new session (default: reuse the active one, else local[*])")
    group.add_argument(
        "--driver-memory", default=DEFAULTS.driver_memory, help="driver memory for a new session (default: %(default)s)"
    )
    group.add_argument(
        "--arrow-batch-size",
        type=positive_int,
        default=DEFAULTS.arrow_batch_size,
        help="rows per Arrow batch sent to Python (default: %(default)s)",
    )
    group.add_argument(
        "--event-log-dir",
        default=DEFAULTS.event_log_dir,
        help="Spark event logs of local runs, for the History Server (default: %(default)s)",
    )
    group.add_argument("--debug", action="store_true", help="show full tracebacks")


def _featurize_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder or URI of images (<split>/<class>/<file>.jpg)")
    parser.add_argument("--output", required=True, help="folder or URI for the results")
    parser.add_argument(
        "--weights",
        default=DEFAULTS.weights,
        help="'imagenet' (Keras download, cached) or a local Keras .h5 file "
        "(default: $FRUITS_WEIGHTS or imagenet; now: %(default)s)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULTS.engine,
        help="onnx: ONNX Runtime, converted from the Keras model once and cached, ~3x faster on CPU; "
        "keras: TensorFlow (default: onnx when onnxruntime is installed; now: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULTS.precision,
        help="fp32: exact features; int8 (onnx only): ~1.6x faster inference, approximate features "
        "(cosine ~0.98 to fp32), quantized once per weights and calibration sample (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS.batch_size,
        help="images per inference batch (default: %(default)s)",
    )
    parser.add_argument(
        "--limit-per-class", type=positive_int, help="use only the first N images (by path) of each split and class"
    )
    parser.add_argument(
        "--commit-every",
        type=positive_int,
        default=DEFAULTS.commit_every,
        help="--mode incremental: images per commit, the most a killed run can lose (default: %(default)s)",
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        help="featurization tasks (default: 4 per core, more for over 500 images per task)",
    )


def _pca_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pca")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument("--pca-k", type=positive_int, help="keep exactly K components")
    choice.add_argument(
        "--pca-variance",
        type=fraction,
        default=DEFAULTS.pca_variance,
        help="keep the fewest components explaining this share of variance (default: %(default)s)",
    )
    group.add_argument(
        "--standardize", action="store_true", help="scale features to zero mean, unit variance before PCA"
    )
    group.add_argument("--csv", action="store_true", help="also write the PCA output as one flat CSV (pca_csv/)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fruits",
        description="Fruit images -> MobileNetV2 features -> PCA, on Spark.",
        epilog="example: fruits run --input data_sample --output out/demo --weights imagenet",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    helps = {
        "run": "featurize images, then fit and apply PCA",
        "featurize": "images -> <output>/features (1280-d MobileNetV2 vectors)",
        "pca": "<input>/features -> <input>/pca, pca_model, explained_variance.csv",
    }
    run, featurize, pca = (commands.add_parser(name, help=text, description=text) for name, text in helps.items())
    for sub in (run, featurize):
        _featurize_options(sub)
    pca.add_argument("--input", required=True, help="an output folder or URI of `fruits featurize`")
    for sub in (run, pca):
        _pca_options(sub)
    incremental = (
        "incremental: featurize only images not yet in <output>/features (same path, size, time) and drop "
        "the rows of files changed or gone; a killed run resumes where it stopped"
    )
    mode_help = {
        run: f"error: refuse existing results; overwrite: replace them; {incremental}, and the PCA is refit "
        "if anything changed",
        featurize: f"error: refuse existing results; overwrite: replace them; {incremental}",
        pca: "error: refuse an existing PCA; overwrite or incremental: fit it again",
    }
    for sub, text in mode_help.items():
        sub.add_argument("--mode", choices=MODES, default=DEFAULTS.mode, help=f"{text} (default: %(default)s)")
        _spark_options(sub)
    s3.add_commands(commands)
    emr.add_commands(commands)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return Config.from_params(**{key: value for key, value in vars(args).items() if key not in ("command", "debug")})


def summary(manifest: dict) -> str:
    lines = [f"fruits: results in {manifest['output']}"]
    rows = [
        ("images read", manifest.get("input_files")),
        ("featurized", manifest.get("featurized")),
        ("failed", manifest.get("failed")),
        ("feature dim", manifest.get("feature_dim")),
    ]
    if "pca_k" in manifest:
        rows.append(("PCA k", f"{manifest['pca_k']} (explained variance {manifest['explained_variance']:.4f})"))
    rows.append(("seconds", ", ".join(f"{stage} {value}" for stage, value in manifest["seconds"].items())))
    lines += [f"  {name:<12} {value}" for name, value in rows if value is not None]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    label = " ".join(filter(None, (args.command, getattr(args, "action", None))))
    try:
        if hasattr(args, "handler"):  # s3 and emr commands print their own results
            return args.handler(args)
        config = config_from_args(args)
        from fruits import pipeline
        from fruits.session import get_spark

        spark = get_spark(config)
        command = {"run": pipeline.run_all, "featurize": pipeline.run_featurize, "pca": pipeline.run_pca}
        manifest = command[args.command](spark, config)
    except ConfigError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"fruits {label}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"fruits {label}: failed: {type(exc).__name__}: {message} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
