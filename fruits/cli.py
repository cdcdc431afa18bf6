"""`fruits` command line: run, featurize, pca (Spark); train, export, predict (the
app's classifier); s3 and emr (AWS)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import threading
import traceback

from fruits import s3, spark_args
from fruits.classifier import commands as classifier_commands
from fruits.config import Config, ConfigError
from fruits.emr import commands as emr_commands

EXIT_USAGE = spark_args.EXIT_USAGE
EXIT_FAILED = 1
DEFAULTS = spark_args.DEFAULTS  # the defaults the command line shows


def build_parser() -> argparse.ArgumentParser:
    parser, commands = spark_args.base_parser()
    spark_args.add_spark_commands(commands)
    classifier_commands.add_commands(commands)
    s3.add_commands(commands)
    emr_commands.add_commands(commands)
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


def _import_quietly(name: str) -> None:
    """Import ``name`` ahead of its use; an error is raised again, and reported in
    one line, where it is imported for use."""
    with contextlib.suppress(Exception):
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    label = " ".join(filter(None, (args.command, getattr(args, "action", None))))
    try:
        if hasattr(args, "handler"):  # s3 and emr commands print their own results
            return args.handler(args)
        config = config_from_args(args)
        from fruits.session import get_spark

        # The pipeline's imports (pandas, pyarrow, ...: ~1 s) run while the main
        # thread only waits for the JVM to start.
        importing = threading.Thread(target=_import_quietly, args=("fruits.pipeline",), daemon=True)
        importing.start()
        spark = get_spark(config)
        importing.join()
        from fruits import pipeline

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
