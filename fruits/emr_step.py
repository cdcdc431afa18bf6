"""Entry script of `fruits emr run` steps, uploaded to s3://BUCKET/code/emr_step.py.

EMR runs it as ``spark-submit --deploy-mode cluster ... s3://BUCKET/code/emr_step.py
run --input s3://... --output s3://...``: the arguments are those of the
`fruits` command line. It starts the session first, without a master, so
Spark keeps the one spark-submit chose (YARN); `fruits` then reuses that
session instead of starting a local one. The exit code is the command's, so
a usage error (2) or a failure (1) fails the step.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from pyspark.sql import SparkSession

    from fruits.cli import main as fruits_main

    spark = SparkSession.builder.appName("fruits " + " ".join(argv[:1])).getOrCreate()
    try:
        return fruits_main(argv)
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
