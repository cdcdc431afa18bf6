"""The pipeline on a real Spark standalone cluster: a master and two one-core
workers on 127.0.0.1, each its own JVM, started from the installed pyspark.

The driver runs in a separate process (`python -m fruits.cli`), as on EMR: the
results must equal a local run's, so nothing depends on the driver's local
state, and an executor killed mid-job must be replaced and its tasks retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pyspark
import pytest

import fruits
from fruits import engines
from fruits.config import cache_dir
from fruits.features import FEATURE_DIM, file_sha256
from tests.conftest import REAL_CLASSES_STEP, SAMPLE, copy_classes, without_tensorflow
from tests.test_pipeline import manifest_of

SPARK_CLASS = Path(pyspark.__file__).parent / "bin" / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
WORKERS = 2
STARTUP_SECONDS = 90
RUN_SECONDS = 300
# 10 real classes x 80 images: ~15 s of featurization on two one-core executors,
# 8 tasks of 100 images, so most tasks are still to run when one has finished.
EXECUTOR_LOSS_CLASSES = 10
EXECUTOR_LOSS_IMAGES = 800
# An executor's log line "Running task 3.0 in stage 0.0 (TID 3)": task index, attempt, stage.
TASK_EVENT = re.compile(r"(Running|Finished) task (\d+)\.(\d+) in stage (\S+) \(TID")
MASTER_UI_STARTED = re.compile(r"Successfully started service 'MasterUI' on port (\d+)")
# A direct opener: a proxy from the environment must not see 127.0.0.1.
LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def session_members(leader: int) -> list[int]:
    """Processes in the session that ``leader`` started (start_new_session=True):
    its JVM, the executors a worker launched, their Python workers."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == leader:
                    members.append(int(entry.name))
            except OSError:  # exited meanwhile
                continue
    return members


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except OSError:
            continue


def stop_sessions(processes: list[subprocess.Popen], grace_seconds: float = 10) -> None:
    """SIGTERM every process of each session, then SIGKILL what is left."""
    leaders = [process.pid for process in processes]
    signal_all([pid for leader in leaders for pid in session_members(leader)], signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    signal_all([pid for leader in leaders for pid in session_members(leader)], signal.SIGKILL)
    for process in processes:
        process.wait(timeout=10)


def unfinished_tasks(executor_log: str) -> set[tuple[str, str, str]]:
    """(index, attempt, stage) of the tasks an executor's log shows started, not finished."""
    started, finished = set(), set()
    for event, *task in TASK_EVENT.findall(executor_log):
        (started if event == "Running" else finished).add(tuple(task))
    return started - finished


def writing_stages(executor_log: str) -> set[str]:
    """Stages whose tasks set up an output committer, in a one-core executor's log
    (one task at a time): in `fruits featurize`, the stage that writes the features."""
    stages, stage = set(), None
    for line in executor_log.splitlines():
        if event := TASK_EVENT.search(line):
            stage = event[4] if event[1] == "Running" else None
        elif stage and "OutputCommitter" in line:
            stages.add(stage)
    return stages


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def log_tails(folder: Path, lines: int = 15) -> str:
    tails = []
    for log in sorted(folder.rglob("*.log")) + sorted(folder.rglob("stderr")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.relative_to(folder)}\n" + "\n".join(text))
    return "\n".join(tails)


def master_state(web_ui: str) -> dict:
    """The master's view (its web UI's JSON): url, workers, active and completed apps."""
    with LOCAL_HTTP.open(f"{web_ui}/json/", timeout=5) as response:
        return json.load(response)


@dataclass
class StandaloneCluster:
    url: str
    web_ui: str
    root: Path
    work_dirs: list[Path]
    workers: list[subprocess.Popen]

    def state(self) -> dict:
        return master_state(self.web_ui)

    def app_ids(self) -> set[str]:
        state = self.state()
        return {app["id"] for app in state["activeapps"] + state["completedapps"]}

    def executor_logs(self, app_id: str) -> dict[str, str]:
        """Executor id -> its log, for every executor any worker launched for ``app_id``."""
        return {
            log.parent.name: log.read_text(errors="replace")
            for work_dir in self.work_dirs
            for log in (work_dir / app_id).glob("*/stderr")
        }

    def finished_tasks_per_worker(self, app_id: str) -> list[int]:
        return [
            sum(log.read_text(errors="replace").count("Finished task") for log in (work_dir / app_id).glob("*/stderr"))
            for work_dir in self.work_dirs
        ]

    def executor_jvms(self, app_id: str) -> dict[str, int]:
        """Executor id -> pid of the executor JVMs now running for ``app_id``."""
        jvms = {}
        for worker in self.workers:
            for pid in session_members(worker.pid):
                argv = command_line(pid)
                if EXECUTOR_CLASS in argv and app_id in argv:
                    jvms[argv[argv.index("--executor-id") + 1]] = pid
        return jvms


def spark_env(**extra: str) -> dict[str, str]:
    """Everything on 127.0.0.1, and Python workers running this venv's interpreter."""
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_CLASS.parent.parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        **extra,
    }


def start_daemon(name: str, main_class: str, args: list[str], logs: Path, env: dict[str, str]) -> subprocess.Popen:
    """`spark-class main_class args` in its own session, logging to <logs>/<name>.log."""
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [str(SPARK_CLASS), main_class, *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_for(condition: Callable[[], Any], seconds: float, what: str, processes: list[subprocess.Popen], logs: Path):
    """Poll ``condition`` until it returns a truthy value; fail with the logs if it
    does not in time or a process dies."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dead = [process.args for process in processes if process.poll() is not None]
        if dead:
            pytest.fail(f"{what}: a process exited: {dead}\n{log_tails(logs)}")
        try:
            value = condition()
        except OSError:  # the web UI is not up yet
            value = None
        if value:
            return value
        time.sleep(0.5)
    return pytest.fail(f"{what}: not within {seconds} s\n{log_tails(logs)}")


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    """A master and two workers (1 core, 2g each), each its own JVM; torn down
    afterwards with every executor and Python worker they started."""
    root = tmp_path_factory.mktemp("standalone")
    logs = root / "logs"
    logs.mkdir()
    env = spark_env(SPARK_DAEMON_MEMORY="512m")
    master_args = ["--host", "127.0.0.1", "--port", "0", "--webui-port", "0"]  # 0: any free port
    daemons = [start_daemon("master", MASTER_CLASS, master_args, logs, env)]
    try:

        def master_web_ui() -> str | None:
            started = MASTER_UI_STARTED.search((logs / "master.log").read_text(errors="replace"))
            return started and f"http://127.0.0.1:{started[1]}"

        web_ui = wait_for(master_web_ui, STARTUP_SECONDS, "master web UI", daemons, logs)
        url = wait_for(lambda: master_state(web_ui)["url"], STARTUP_SECONDS, "master", daemons, logs)
        cluster = StandaloneCluster(url, web_ui, root, [], [])
        for number in range(1, WORKERS + 1):
            work_dir = root / f"worker-{number}"
            worker_args = [url, "--host", "127.0.0.1", "--cores", "1", "--memory", "2g", "--webui-port", "0"]
            worker_args += ["--work-dir", str(work_dir)]
            worker = start_daemon(f"worker-{number}", WORKER_CLASS, worker_args, logs, env)
            daemons.append(worker)
            cluster.workers.append(worker)
            cluster.work_dirs.append(work_dir)

        def all_workers_alive() -> bool:
            return cluster.state()["aliveworkers"] == WORKERS

        wait_for(all_workers_alive, STARTUP_SECONDS, "2 alive workers", daemons, logs)
        yield cluster
    finally:
        stop_sessions(daemons)


def fruits_driver(*args, log: Path) -> subprocess.Popen:
    """`fruits ...` in its own process (and session): the driver of a cluster run."""
    command = [sys.executable, "-m", "fruits.cli", *map(str, args), "--driver-memory", "1g"]
    with log.open("wb") as handle:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=spark_env(), cwd=log.parent, start_new_session=True
        )


def feature_rows(out: Path) -> list[dict]:
    """The features Parquet as rows, read without Spark."""
    return pq.read_table(out / "features").to_pylist()


def image_uris(folder: Path) -> set[str]:
    return {f"file:{path}" for path in folder.rglob("*.jpg")}


def cosines(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return (left * right).sum(1) / (np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1))


@pytest.fixture(scope="module")
def executor_loss_input(tmp_path_factory) -> Path:
    """800 real images in 10 classes: a job long enough to lose an executor in."""
    return copy_classes(tmp_path_factory.mktemp("fruits360-800"), REAL_CLASSES_STEP, EXECUTOR_LOSS_CLASSES)


@pytest.fixture(scope="module")
def onnx_model_cached(weights) -> Path:
    """Convert the weights once, here: the drivers below then find the model in the
    cache (the test session's XDG_CACHE_HOME) and can start at the same time."""
    return engines.onnx_model(weights, file_sha256(weights), Path(cache_dir()) / "models")


@pytest.mark.slow
def test_cluster_run_equals_local_run(standalone_cluster, weights, onnx_model_cached, tmp_path):
    apps_before = standalone_cluster.app_ids()
    masters = {"cluster": standalone_cluster.url, "local": "local[2]"}
    outputs = {name: tmp_path / name for name in masters}
    logs = {name: tmp_path / f"{name}.log" for name in masters}
    common = ("--input", SAMPLE, "--weights", weights)
    drivers = {
        name: fruits_driver("run", *common, "--output", outputs[name], "--master", master, log=logs[name])
        for name, master in masters.items()
    }
    try:
        exit_codes = {name: driver.wait(timeout=RUN_SECONDS) for name, driver in drivers.items()}
    finally:
        stop_sessions(list(drivers.values()))
    driver_log_tails = {name: log.read_text(errors="replace")[-3000:] for name, log in logs.items()}
    assert exit_codes == {"cluster": 0, "local": 0}, driver_log_tails

    manifests = {name: manifest_of(out) for name, out in outputs.items()}
    assert {name: manifest["parameters"]["master"] for name, manifest in manifests.items()} == masters
    for manifest in manifests.values():
        assert (manifest["input_files"], manifest["featurized"], manifest["failed"]) == (36, 36, 0)
    assert manifests["cluster"]["pca_k"] == manifests["local"]["pca_k"]
    assert manifests["cluster"]["explained_variance"] == pytest.approx(manifests["local"]["explained_variance"])

    cluster_table, local_table = feature_rows(outputs["cluster"]), feature_rows(outputs["local"])
    assert len(cluster_table) == len(local_table) == 36
    cluster_rows, local_rows = ({row["path"]: row for row in table} for table in (cluster_table, local_table))
    assert set(cluster_rows) == set(local_rows) == image_uris(SAMPLE)
    paths = sorted(local_rows)
    for column in ("label", "split", "error"):
        assert [cluster_rows[path][column] for path in paths] == [local_rows[path][column] for path in paths]
    similarity = cosines(
        np.array([cluster_rows[path]["features"] for path in paths]),
        np.array([local_rows[path]["features"] for path in paths]),
    )
    assert similarity.min() >= 0.9999

    # The cluster ran it: one new application, finished, whose executors on both
    # workers ran its tasks.
    def new_completed_apps() -> list[dict]:
        return [app for app in standalone_cluster.state()["completedapps"] if app["id"] not in apps_before]

    (app,) = wait_for(new_completed_apps, 30, "the application to complete", [], standalone_cluster.root)
    assert (app["name"], app["state"], app["cores"]) == ("fruits", "FINISHED", WORKERS)
    finished_tasks = standalone_cluster.finished_tasks_per_worker(app["id"])
    assert all(count > 0 for count in finished_tasks), finished_tasks


@pytest.mark.slow
def test_an_executor_lost_mid_job_is_replaced_and_its_tasks_retried(
    standalone_cluster, weights, onnx_model_cached, executor_loss_input, tmp_path
):
    cluster = standalone_cluster
    apps_before = cluster.app_ids()
    out, log = tmp_path / "out", tmp_path / "driver.log"
    args = ("--input", executor_loss_input, "--output", out, "--weights", weights, "--master", cluster.url)
    driver = fruits_driver("featurize", *args, log=log)
    try:

        def new_app_id() -> str | None:
            return next(iter(cluster.app_ids() - apps_before), None)

        app_id = wait_for(new_app_id, RUN_SECONDS, "the application", [driver], log.parent)

        def executor_featurizing_after_a_featurize_task_finished() -> tuple[str, int] | None:
            """(id, pid) of an executor JVM in the middle of a featurize task, once
            another featurize task finished (the job is well underway, most tasks to go)."""
            logs = cluster.executor_logs(app_id)
            featurize_stages = set().union(*map(writing_stages, logs.values()))
            events = [event for text in logs.values() for event in TASK_EVENT.findall(text)]
            if not any(kind == "Finished" and stage in featurize_stages for kind, _, _, stage in events):
                return None
            busy = [
                (executor, pid)
                for executor, pid in cluster.executor_jvms(app_id).items()
                if any(stage in featurize_stages for _, _, stage in unfinished_tasks(logs.get(executor, "")))
            ]
            return min(busy, default=None)

        victim_id, victim_pid = wait_for(
            executor_featurizing_after_a_featurize_task_finished, RUN_SECONDS, "featurization", [driver], cluster.root
        )
        executors_at_kill = set(cluster.executor_logs(app_id))
        os.kill(victim_pid, signal.SIGKILL)
        driver_running_at_kill = driver.poll() is None
        exit_code = driver.wait(timeout=RUN_SECONDS)
    finally:
        stop_sessions([driver])
    driver_log = log.read_text(errors="replace")
    assert exit_code == 0, driver_log[-3000:]

    # The kill hit a featurize task in flight, a new executor replaced the lost
    # one, and every task lost with it ran again (its next attempt) to the end.
    assert driver_running_at_kill
    assert f"Lost executor {victim_id}" in driver_log
    executors = cluster.executor_logs(app_id)
    assert set(executors) - executors_at_kill, sorted(executors)
    featurize_stages = set().union(*map(writing_stages, executors.values()))
    lost_tasks = unfinished_tasks(executors[victim_id])
    assert any(stage in featurize_stages for _, _, stage in lost_tasks), (lost_tasks, featurize_stages)
    for index, attempt, stage in lost_tasks:
        retry = f"Finished task {index}.{int(attempt) + 1} in stage {stage} (TID"
        assert any(retry in text for text in executors.values()), retry

    manifest = manifest_of(out)
    counts = (manifest["input_files"], manifest["featurized"], manifest["failed"])
    assert counts == (EXECUTOR_LOSS_IMAGES, EXECUTOR_LOSS_IMAGES, 0)
    rows = feature_rows(out)
    assert len(rows) == EXECUTOR_LOSS_IMAGES
    assert {row["path"] for row in rows} == image_uris(executor_loss_input)
    assert all(len(row["features"]) == FEATURE_DIM and row["error"] is None for row in rows)


@pytest.mark.slow
def test_the_emr_step_runs_as_in_a_yarn_container(standalone_cluster, weights, onnx_model_cached, tmp_path):
    """The step's driver the way YARN starts it in cluster mode: HOME is the
    NodeManager's user-home-dir (not writable by the container's user; here a
    file, since root may write anywhere), the working directory is a fresh empty
    container folder, no XDG cache, no Keras weights and no TensorFlow; the model
    comes converted, at a URI, as `fruits emr run` uploads it. Executors run on
    the standalone cluster."""
    home = tmp_path / "home"
    home.write_text("not a folder: nothing can be created under HOME")
    container = tmp_path / "container_1700000000000_0001_01_000001"
    container.mkdir()
    model = tmp_path / "bucket" / "code" / "models" / f"{file_sha256(weights)}.onnx"
    model.parent.mkdir(parents=True)
    model.write_bytes(onnx_model_cached.read_bytes())
    out = tmp_path / "bucket" / "processed" / "run1"
    environment = {key: value for key, value in spark_env().items() if key not in ("XDG_CACHE_HOME", "FRUITS_WEIGHTS")}
    environment["HOME"] = str(home)
    environment["PYTHONPATH"] = os.pathsep.join([str(without_tensorflow(tmp_path / "lean")), environment["PYTHONPATH"]])
    spark_submit = SPARK_CLASS.parent / "spark-submit"
    command = [str(spark_submit), "--master", standalone_cluster.url, "--conf", "spark.driver.memory=1g"]
    command += [str(Path(fruits.__file__).with_name("emr_step.py")), "featurize"]
    command += ["--input", f"file://{SAMPLE}", "--output", f"file://{out}", "--onnx-model", f"file://{model}"]
    with (tmp_path / "driver.log").open("wb") as log:
        step = subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=container,
            timeout=RUN_SECONDS,
            check=False,
        )
    driver_log = (tmp_path / "driver.log").read_text(errors="replace")
    assert step.returncode == 0, driver_log[-3000:]
    manifest = manifest_of(out)
    assert (manifest["input_files"], manifest["featurized"], manifest["failed"]) == (36, 36, 0)
    assert manifest["weights_sha256"] == file_sha256(weights)  # still the Keras weights' digest
    assert manifest["parameters"]["onnx_model"] == f"file://{model}"
    assert {row["path"] for row in feature_rows(out)} == image_uris(SAMPLE)
