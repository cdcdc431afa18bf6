"""The options of the Spark commands (run, featurize, pca), apart from the rest
of the command line, so `fruits emr run` can check a step's arguments without
importing `fruits.cli`, which imports `fruits.emr`."""

from __future__ import annotations

import argparse

from fruits.argtypes import fraction, positive_int
from fruits.config import ENGINES, IMAGE_SIDES, MODES, PRECISIONS, Config

EXIT_USAGE = 2
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
        "--onnx-model",
        help="a model converted by fruits (what `fruits emr run` uploads to s3://B/code/models/), local or any "
        "Hadoop URI, used instead of converting --weights: no Keras or TensorFlow needed",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULTS.engine,
        help="onnx: ONNX Runtime, converted from the Keras model once and cached, ~3x faster on CPU; "
        "keras: TensorFlow (default: onnx when onnxruntime is installed; now: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        choices=IMAGE_SIDES,
        default=DEFAULTS.image_size,
        help="side images are resized to before MobileNetV2 (same weights): 192 needs ~27%% fewer operations "
        "for 0.3 point of accuracy (README, Smaller inputs; default: %(default)s, the reference)",
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


def base_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The `fruits` parser with no command yet, and the subparsers its commands are added to."""
    parser = _Parser(
        prog="fruits",
        description="Fruit images -> MobileNetV2 features -> PCA, on Spark.",
        epilog="example: fruits run --input data_sample --output out/demo --weights imagenet",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    return parser, commands


def add_spark_commands(commands: argparse._SubParsersAction) -> None:
    """`fruits run|featurize|pca`."""
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


def spark_parser() -> argparse.ArgumentParser:
    """`fruits` with only run, featurize and pca: the commands an EMR step runs."""
    parser, commands = base_parser()
    add_spark_commands(commands)
    return parser
