"""`fruits emr notebook`: one of the project's notebooks, run headless on the cluster.

As an EMR step (the default): papermill from the nodes' venv reads the notebook
from s3://B/notebooks/ and writes the executed copy, outputs and plots included,
to s3://B/notebooks/runs/<run-id>/; its figures land under the notebook's
``output_uri``. The kernel is the venv's ipykernel; EMR's own pyspark (not in the
venv) is put on its path and Spark runs on YARN.

Notebook 02 featurizes: it gets the model converted where you run the command
and uploaded to s3://B/code/models/ (-p onnx_model), as `fruits emr run` does.

With --studio-workspace: EMR Studio's parameterized execution
(StartNotebookExecution) instead, on the workspace's copy of the notebook, run
with the notebook-execution role (--notebook-role, default EMR Studio's
EMR_Notebooks_DefaultRole: it needs the workspace's S3 location).
moto does not implement that API: its request is checked against botocore's
service model only (tests/test_emr.py, with a Stubber).
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
from pathlib import Path

from fruits import aws
from fruits.aws import user_errors
from fruits.config import ConfigError, default_weights
from fruits.emr.cluster import cluster_target, live_cluster
from fruits.emr.code import upload_model
from fruits.emr.spec import ROOT, VENV_PYTHON
from fruits.emr.steps import cluster_bucket, follow_step

NOTEBOOKS = ROOT / "notebooks"
HEADLESS = ("01_local_setup", "02_featurization", "03_pca")  # 04 drives AWS from your machine
FEATURIZING = ("02_featurization",)  # given the model converted here: the nodes have no Keras
STUDIO_ROLE = "EMR_Notebooks_DefaultRole"  # the role EMR Studio creates for notebook executions
EMR_SPARK_PYTHON = "/usr/lib/spark/python"  # EMR's pyspark, and py4j under lib/


def notebook_name(text: str) -> str:
    name = text.removesuffix(".ipynb")
    if name not in HEADLESS:
        raise ConfigError(f"no notebook {text!r} to run on the cluster (choose one of: {', '.join(HEADLESS)})")
    return name


def papermill_command(bucket: str, name: str, run_id: str, params: dict[str, str], papermill: str) -> list[str]:
    """papermill from s3://B/notebooks/ to s3://B/notebooks/runs/<run-id>/, on YARN."""
    command = [
        papermill,
        f"s3://{bucket}/notebooks/{name}.ipynb",
        f"s3://{bucket}/notebooks/runs/{run_id}/{name}.ipynb",
    ]
    command += ["--no-progress-bar", "--log-output", "-p", "spark_master", "yarn"]
    for key, value in params.items():
        command += ["-p", key, value]
    return command


def step_request(bucket: str, name: str, run_id: str, params: dict[str, str]) -> dict:
    papermill = str(Path(VENV_PYTHON).with_name("papermill"))
    environment = (
        f"export SPARK_HOME=/usr/lib/spark PYSPARK_PYTHON={VENV_PYTHON} "
        f'PYTHONPATH="{EMR_SPARK_PYTHON}:$(ls {EMR_SPARK_PYTHON}/lib/py4j-*-src.zip)";'
    )
    script = f"{environment} exec {shlex.join(papermill_command(bucket, name, run_id, params, papermill))}"
    return {
        "Name": f"fruits notebook {name} ({run_id})",
        "ActionOnFailure": "CONTINUE",
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["bash", "-c", script]},
    }


def typed(value: str):
    """A parameter as papermill's -p reads it (0.9 a number, true a bool, else text):
    NotebookParams passes JSON types on, and the notebooks compare numbers."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def studio_request(cluster_id: str, workspace: str, name: str, run_id: str, params: dict, *, role: str) -> dict:
    """StartNotebookExecution: the workspace's copy of the notebook, on this cluster."""
    return {
        "EditorId": workspace,
        "RelativePath": f"{name}.ipynb",
        "NotebookExecutionName": run_id,
        "NotebookParams": json.dumps({key: typed(value) for key, value in params.items()}),
        "ExecutionEngine": {"Id": cluster_id, "Type": "EMR"},
        "ServiceRole": role,
        "Tags": [{"Key": "project", "Value": "fruits"}],
    }


def run_notebook(args) -> int:
    name = notebook_name(args.name)
    params = dict(args.parameter)
    run_id = f"{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    cluster_id, target = cluster_target(args)
    with user_errors(f"emr notebook on {cluster_id}"):
        emr = aws.client("emr", target)
        cluster = live_cluster(emr, cluster_id)
        bucket = cluster_bucket(cluster)
        s3 = aws.client("s3", target)
        if name in FEATURIZING and "onnx_model" not in params:
            params["onnx_model"] = upload_model(s3, bucket, params.get("weights") or default_weights())
        if args.studio_workspace:
            request = studio_request(cluster_id, args.studio_workspace, name, run_id, params, role=args.notebook_role)
            execution = emr.start_notebook_execution(**request)["NotebookExecutionId"]
            print(f"notebook execution {execution} started in EMR Studio workspace {args.studio_workspace}")
            return 0
        s3.upload_file(str(NOTEBOOKS / f"{name}.ipynb"), bucket, f"notebooks/{name}.ipynb")
        step = step_request(bucket, name, run_id, params)
        step_id = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
        print(f"step {step_id}: {name} -> s3://{bucket}/notebooks/runs/{run_id}/{name}.ipynb", file=sys.stderr)
        return follow_step(emr, cluster, step_id, "notebook", args)
