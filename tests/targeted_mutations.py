"""Targeted mutations: each breaks one behaviour the README promises, in a copy of
the checkout, and runs the fast tests that guard it; every one must fail them.

mutmut (`make mutation`) mutates every line but needs a Spark session per
mutant: one to two minutes each on 2 cores, hours for the package. This list
is the quick check (`make mutation-quick`, about 6 minutes): the behaviours of
an earlier mutation audit, and of the AWS side, each with its guard.

    .venv/bin/python tests/targeted_mutations.py   # prints one line per mutant, then JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (behaviour broken, file, text, replacement, the guarding tests)
MUTANTS = [
    ("failure exits 2, not 1", "fruits/cli.py", "EXIT_FAILED = 1", "EXIT_FAILED = 2", "tests/test_cli.py -k failure"),
    (
        "--standardize ignored",
        "fruits/pipeline.py",
        "standardize=config.standardize)",
        "standardize=False)",
        "tests/test_pca.py -k standardize",
    ),
    (
        "manifest written in place",
        "fruits/output.py",
        "stream = fs.create(partial, True)",
        "stream = fs.create(path, True); partial = path",
        "tests/test_output.py",
    ),
    (
        "incremental ignores mtime",
        "fruits/pipeline.py",
        'known = ["path", "size", "modified"]',
        'known = ["path", "size"]',
        "tests/test_incremental.py -k changed_images",
    ),
    (
        "no read-ahead",
        "fruits/features.py",
        "    handoff: queue.Queue = queue.Queue(maxsize=1)",
        "    yield from items\n    return\n    handoff: queue.Queue = queue.Queue(maxsize=1)",
        "tests/test_pipeline.py -k read_ahead",
    ),
    (
        "node role writes the whole bucket",
        "env/iam/ec2-bucket-policy.json",
        '"arn:${partition}:s3:::${bucket}/processed/*"',
        '"arn:${partition}:s3:::${bucket}/*"',
        "tests/test_emr.py -k instance_role",
    ),
    (
        "manifest drops cores",
        "fruits/pipeline.py",
        '        "cores": spark.sparkContext.defaultParallelism,',
        "",
        "tests/test_pipeline.py -k manifest_accounts",
    ),
    (
        "manifest python_version wrong",
        "fruits/pipeline.py",
        '"python_version": platform.python_version(),',
        '"python_version": platform.python_version_tuple()[0],',
        "tests/test_pipeline.py -k manifest_accounts",
    ),
    (
        "pca_variance_target kept with --pca-k",
        "fruits/pipeline.py",
        "pca_variance_target=None if config.pca_k else config.pca_variance,",
        "pca_variance_target=config.pca_variance,",
        "tests/test_pipeline.py -k featurize_then_pca",
    ),
    ("NEAREST resize", "fruits/images.py", "Image.BILINEAR", "Image.NEAREST", "tests/test_reference_features.py"),
    ("scale by 128", "fruits/images.py", "np.float32(127.5)", "np.float32(128)", "tests/test_reference_features.py"),
    (
        "no EXIF rotation",
        "fruits/images.py",
        "upright = ImageOps.exif_transpose(image)",
        "upright = image",
        "tests/test_hostile_inputs.py -k exif",
    ),
    (
        "cache ignores an unwritable HOME",
        "fruits/config.py",
        "    if _can_write(preferred):\n        return preferred\n",
        "    return preferred\n",
        "tests/test_session.py -k cache",
    ),
    (
        "request without the EMR tag",
        "fruits/emr/spec.py",
        "        tags.insert(0, dict(EMR_MANAGED_TAG))",
        "        pass",
        "tests/test_emr.py -k managed_policy_tag_gets_it",
    ),
    (
        "TLS-only policy inverted",
        "fruits/s3.py",
        '"Condition": {"Bool": {"aws:SecureTransport": "false"}}',
        '"Condition": {"Bool": {"aws:SecureTransport": "true"}}',
        "tests/test_s3.py -k tls",
    ),
    (
        "manifest downloaded with the data",
        "fruits/s3.py",
        "    if not transfer.failed:  # a manifest",
        "    if True:  # a manifest",
        "tests/test_s3.py -k manifest",
    ),
    (
        "2 tasks per core instead of 4",
        "fruits/features.py",
        "return max(4 * parallelism,",
        "return max(2 * parallelism,",
        "tests/test_pipeline.py -k task_count",
    ),
    (
        "choose_k one short",
        "fruits/pca.py",
        "return int(reached[0]) + 1 if reached.size",
        "return int(reached[0]) if reached.size",
        "tests/test_pca.py -k choose_k",
    ),
    (
        "empty files not counted",
        "fruits/pipeline.py",
        "            rows = rows.unionByName(empty_file_rows(spark, empty))",
        "            pass",
        "tests/test_hostile_inputs.py -k every_counted_file",
    ),
    (
        "versioning not enabled",
        "fruits/s3.py",
        'VersioningConfiguration={"Status": "Enabled"}',
        'VersioningConfiguration={"Status": "Suspended"}',
        "tests/test_s3.py -k creates_a_private",
    ),
    (
        "executor Python memory not in the overhead",
        "fruits/emr/memory.py",
        "EXECUTOR_OVERHEAD_WITH_PYTHON_MB = EXECUTOR_OVERHEAD_MB + EXECUTOR_CORES * PYTHON_MB_PER_TASK",
        "EXECUTOR_OVERHEAD_WITH_PYTHON_MB = EXECUTOR_OVERHEAD_MB",
        "tests/test_emr.py -k bootstrap_configurations",
    ),
    (
        "model not uploaded for the step",
        "fruits/emr/steps.py",
        '    if parsed.command == "pca" or parsed.onnx_model:',
        "    if True:",
        "tests/test_emr.py -k model_converted_here",
    ),
]


def copy_of_checkout(target: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in files)):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def main() -> int:
    environment = dict(os.environ)
    environment.setdefault("FRUITS_DATA", str(ROOT.parent / "shared" / "data" / "fruits-360"))
    environment.setdefault(
        "FRUITS_WEIGHTS", str(ROOT.parent / "shared" / "models" / "mobilenet_v2_1.0_224_no_top_reconstructed.h5")
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="fruits-mutants-") as scratch:
        checkout = copy_of_checkout(Path(scratch))
        for behaviour, path, text, replacement, tests in MUTANTS:
            source = (checkout / path).read_text()
            if text not in source:
                results[behaviour] = "not applied: the code changed, update this list"
                print(f"{behaviour}: {results[behaviour]}", flush=True)
                continue
            (checkout / path).write_text(source.replace(text, replacement, 1))
            started = time.monotonic()
            command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
            run = subprocess.run(
                [*command, *tests.split()], cwd=checkout, env=environment, capture_output=True, check=False
            )
            (checkout / path).write_text(source)
            results[behaviour] = {0: "survived", 1: "killed"}.get(
                run.returncode, f"error (pytest exit {run.returncode})"
            )
            print(f"{behaviour}: {results[behaviour]} ({time.monotonic() - started:.0f} s)", flush=True)
    killed = sum(verdict == "killed" for verdict in results.values())
    print(json.dumps({"killed": killed, "mutants": len(results), "results": results}, indent=1))
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
