"""Memory bounds of a whole `fruits run`, at several input sizes; prints JSON.

    .venv/bin/python bench/memory.py [--images 1000,10000] [--driver-memory 4g,1g]
                                     [--stage run|featurize] [--weights PATH]

For each size, real images from FRUITS_DATA (repeated under new names past
the data set's size) go through `fruits run` (or `featurize`) in its own
process. The ONNX model is converted beforehand, so no measured run imports
TensorFlow. The process tree is polled every 0.1 s for the peak RSS (VmHWM)
of the Python driver, of the JVM (in local mode it hosts the driver and the
executors) and of each PySpark Python worker. Driver memory must not grow
with the number of images: nothing but counts, paths and the PCA's 1280x1280
statistics reach the driver. Each size also runs with a small JVM heap
(--driver-memory): if the run still completes, what the JVM's RSS gains with
more images is garbage-collector slack, not data it must hold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from featurize import WEIGHTS, pick_images, prepare_backbone


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a live process, in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def descendants(root: int) -> dict[int, str]:
    """Every live process under root (root included), with its command line."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            parents[pid] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            commands[pid] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    tree = {root}
    changed = True
    while changed:
        grown = {pid for pid, parent in parents.items() if parent in tree} - tree
        changed = bool(grown)
        tree |= grown
    return {pid: commands.get(pid, "") for pid in tree}


def role(command: str) -> str:
    if "pyspark.daemon" in command or "pyspark/daemon" in command or "pyspark.worker" in command:
        return "worker"
    if "java" in command.split(" ", 1)[0]:
        return "jvm"
    return "other"


def measure(stage: str, images: Path, output: Path, weights: str, driver_memory: str) -> dict:
    """Run `fruits <stage>` and follow its process tree until it exits."""
    command = [Path(sys.executable).with_name("fruits"), stage, "--input", images, "--output", output]
    command += ["--weights", weights, "--mode", "overwrite", "--driver-memory", driver_memory]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[str, float]] = {}
    while process.poll() is None:
        for pid, cmd in descendants(process.pid).items():
            rss = peak_rss_mb(pid)
            if rss is not None:
                kind = "driver" if pid == process.pid else role(cmd)
                peaks[pid] = (kind, max(rss, peaks.get(pid, (kind, 0.0))[1]))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"fruits {stage} failed ({process.returncode}): {process.stderr.read()[-2000:]}")
    manifest = json.loads((output / "manifest.json").read_text())

    def largest(kind: str) -> float:
        return round(max((mb for k, mb in peaks.values() if k == kind), default=0.0), 1)

    return {
        "images": manifest["input_files"],
        "driver_memory": driver_memory,
        "featurized": manifest["featurized"],
        "seconds": round(seconds, 1),
        "driver_python_peak_mb": largest("driver"),
        "jvm_peak_mb": largest("jvm"),
        "worker_peak_mb": largest("worker"),
        "python_workers": sum(1 for k, _ in peaks.values() if k == "worker"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="1000,10000", help="comma-separated input sizes")
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--stage", choices=("run", "featurize"), default="run", help="the fruits command to measure")
    parser.add_argument(
        "--driver-memory", default="4g,1g", help="comma-separated JVM heap sizes to run each input size with"
    )
    args = parser.parse_args()
    prepare_backbone("onnx", Path(), Path(args.weights))  # converted and cached here, not in a measured driver
    load_before = os.getloadavg()
    runs = []
    for count in map(int, args.images.split(",")):
        with tempfile.TemporaryDirectory() as scratch:
            images = pick_images(count, Path(scratch) / "images")
            for heap in args.driver_memory.split(","):
                runs.append(measure(args.stage, images, Path(scratch) / "out", args.weights, heap))
    report = {
        "machine": {"cores": os.cpu_count(), "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "runs": runs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
