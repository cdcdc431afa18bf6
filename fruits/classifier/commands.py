"""`fruits train`, `fruits export` and `fruits predict`: argparse wiring only."""

from __future__ import annotations

import argparse
import os
import sys

from fruits.argtypes import non_negative, positive_int
from fruits.config import PRECISIONS, Config


def _spark(args: argparse.Namespace):
    from fruits.session import get_spark

    return get_spark(Config(master=args.master))


def _train(args: argparse.Namespace) -> int:
    from fruits.classifier.train import train

    report = train(_spark(args), args.input, args.output, args.reg)
    print(
        f"fruits train: test accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f} "
        f"({len(report['labels'])} classes, {report['train_rows']} training and {report['test_rows']} test images: "
        f"{report['test_set']})"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from fruits.classifier.export import export

    result = export(_spark(args), args.input, args.output, precision=args.precision, weights=args.weights)
    print(
        f"fruits export: {result['output']}: {result['bytes'] / 1e6:.1f} MB, {result['precision']}, "
        f"{result['classes']} classes, input {result['image_size']}x{result['image_size']}, "
        f"{result['latency_ms_one_core']:.1f} ms per image on one core (ONNX Runtime)"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fruits.classifier.predict import predict

    failed = 0
    try:
        for prediction in predict(args.model, args.paths, args.top):
            if prediction.error:
                failed += 1
                if not args.json:
                    print(f"{prediction.path}\terror: {prediction.error}", file=sys.stderr)
                    continue
            print(prediction.as_json() if args.json else prediction.line(), flush=True)
    except BrokenPipeError:  # `fruits predict ... | head`: the reader has all it wanted
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- Python's own advice: no second error at exit
        return 0
    return 1 if failed else 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="a classifier on a run's PCA features (Training split; scored on Test)",
        description="Multinomial logistic regression (Spark ML) on <input>/pca: trained on the Training split, "
        "scored on Test (without one: on 20% of the images by path hash). Writes the model, metrics.json "
        "and confusion.png, and records them in the run's manifest.",
    )
    train.add_argument("--input", required=True, help="a finished `fruits run` output (folder or URI)")
    train.add_argument("--output", help="where the classifier goes (default: <input>/classifier)")
    train.add_argument("--reg", type=non_negative, default=0.0, help="L2 regularization (default: %(default)s)")
    train.set_defaults(handler=_train)

    export = commands.add_parser(
        "export",
        help="one ONNX model for the app: uint8 image -> class probabilities",
        description="Compose the run's backbone, PCA and classifier into one ONNX model (no retraining): "
        "input `image` uint8 (N, S, S, 3) RGB, S = the run's --image-size; output `probabilities` "
        "(N, classes); labels in the metadata.",
    )
    export.add_argument("--input", required=True, help="a `fruits run` output with a `fruits train` classifier")
    export.add_argument("--output", required=True, help="the .onnx file to write")
    export.add_argument(
        "--precision", choices=PRECISIONS, help="backbone precision (default: the run's; int8 calibrates as the run)"
    )
    export.add_argument("--weights", help="the run's Keras .h5 weights, if not in the conversion cache or at its path")
    export.set_defaults(handler=_export)

    predict = commands.add_parser(
        "predict",
        help="classify photos with an exported model (no Spark, no TensorFlow)",
        description="One line per image: path, then label and probability of the top k, tab-separated. "
        "An unreadable image is one line on stderr and exit code 1 at the end.",
    )
    predict.add_argument("model", help="a model written by `fruits export`")
    predict.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER", help=".jpg/.jpeg/.png files or folders")
    predict.add_argument("--top", type=positive_int, default=3, help="labels per image (default: %(default)s)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line instead")
    predict.set_defaults(handler=_predict)

    for sub in (train, export):
        sub.add_argument("--master", help="Spark master for a new session (default: local[*])")
    for sub in (train, export, predict):
        sub.add_argument("--debug", action="store_true", help="show full tracebacks")
