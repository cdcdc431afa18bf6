"""`fruits emr ACTION`: the command-line options; the handlers live with the
AWS logic they drive (cluster, steps, clone, cost)."""

from __future__ import annotations

import argparse

from fruits import argtypes
from fruits.aws import add_aws_options
from fruits.emr import clone, cluster, cost, notebooks, steps
from fruits.emr.cost import DEFAULT_IMAGES_PER_VCPU_SECOND, DEFAULT_STARTUP_MINUTES
from fruits.emr.spec import CLUSTER_SPEC


def _idle_timeout(text: str) -> int:
    value = argtypes.count(text)
    if value and not 60 <= value <= 604800:
        raise argparse.ArgumentTypeError("must be 0 (never) or 60..604800 seconds")
    return value


def _node_options(parser: argparse.ArgumentParser, defaults: str) -> None:
    group = parser.add_argument_group("nodes", f"default: {defaults}")
    group.add_argument("--master-type", help="primary node instance type")
    group.add_argument("--core-type", help="core node instance type")
    group.add_argument("--core-count", type=argtypes.positive_int, help="core nodes")
    group.add_argument("--task-type", help="task node instance type (default: the core type)")
    group.add_argument("--task-count", type=argtypes.count, help="task nodes (none by default)")
    group.add_argument(
        "--idle-timeout",
        type=_idle_timeout,
        help="seconds idle before the cluster terminates itself; 0: never (spec default: 3600)",
    )


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-id", help="default: the cluster of the last `fruits emr up`")
    add_aws_options(parser)


def _wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=60.0, help="minutes to wait at most (default: %(default)s)")


def add_commands(commands) -> None:
    """`fruits emr up|run|notebook|status|ui|down|clone|cost`."""
    text = "an EMR cluster for fruits steps: create, run steps, watch, tunnel, terminate, clone, cost"
    emr = commands.add_parser("emr", help=text, description=text)
    actions = emr.add_subparsers(dest="action", required=True, metavar="ACTION")

    _add_up(actions)
    _add_run(actions)
    _add_notebook(actions)
    for name, handler, text in (
        ("status", steps.status, "cluster state, steps, failures and log location"),
        ("ui", cluster.ui, "SSH tunnel commands for the Spark History Server, YARN and Livy"),
        ("down", cluster.down, "terminate the cluster and wait until it is gone"),
    ):
        parser = actions.add_parser(name, help=text, description=text)
        _cluster_options(parser)
        if name == "ui":
            parser.add_argument("--key-file", help="private key for SSH (default: ~/.ssh/<key pair name>.pem)")
        if name == "down":
            parser.add_argument("--no-wait", action="store_true", help="return once termination is requested")
            _wait_option(parser)
        parser.set_defaults(handler=handler)

    clone_parser = actions.add_parser("clone", help="write a reusable spec of a cluster, for `fruits emr up --spec`")
    clone_parser.add_argument("cluster_id")
    clone_parser.add_argument("--output", required=True, help="spec file to write (JSON)")
    add_aws_options(clone_parser)
    clone_parser.set_defaults(handler=clone.clone)

    cost_parser = actions.add_parser("cost", help="estimated hours and list-price cost of featurizing N images")
    cost_parser.add_argument("--images", type=argtypes.positive_int, required=True, help="number of images")
    cost_parser.add_argument(
        "--manifest", help="manifest.json of a local run: its images_per_second sets the throughput"
    )
    cost_parser.add_argument(
        "--vcpus-of-run", type=argtypes.positive_int, help="cores the manifest's run had, when it does not say"
    )
    cost_parser.add_argument(
        "--images-per-vcpu-second",
        type=argtypes.positive_number,
        help=f"throughput per vCPU (default {DEFAULT_IMAGES_PER_VCPU_SECOND:g})",
    )
    cost_parser.add_argument(
        "--startup-minutes", type=float, default=DEFAULT_STARTUP_MINUTES, help="cluster start-up (default: %(default)s)"
    )
    cost_parser.add_argument("--spec", default=str(CLUSTER_SPEC), help="cluster spec for the node defaults")
    _node_options(cost_parser, "the spec's nodes")
    cost_parser.add_argument("--region", help="price table region (default: $AWS_REGION, else eu-west-1)")
    cost_parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    cost_parser.set_defaults(handler=cost.cost)


def _add_up(actions) -> None:
    up_parser = actions.add_parser(
        "up", help="upload the code, create roles and SSH group, start the cluster from env/cluster.json"
    )
    up_parser.add_argument("--bucket", help="the project bucket (made by `fruits s3 init`)")
    up_parser.add_argument(
        "--ssh-cidr", required=True, help="the only address range SSH is open to, e.g. 203.0.113.7/32"
    )
    up_parser.add_argument("--key-name", help="EC2 key pair for SSH to the primary node")
    up_parser.add_argument("--subnet-id", help="default: the region's first default subnet")
    up_parser.add_argument("--spec", help="a spec written by `fruits emr clone` instead of env/cluster.json")
    up_parser.add_argument("--name", help="cluster name (default: fruits)")
    up_parser.add_argument("--release", help="EMR release label (spec default: emr-7.5.0)")
    up_parser.add_argument("--spot", action="store_true", help="core and task nodes on Spot (primary stays on-demand)")
    _node_options(up_parser, "the spec's: m5.xlarge primary + 2 m5.xlarge core, on-demand")
    up_parser.add_argument("--wheel", help="upload this fruits wheel instead of building one")
    up_parser.add_argument("--dry-run", action="store_true", help="print the RunJobFlow request; call nothing")
    up_parser.add_argument("--no-wait", action="store_true", help="return once the cluster is requested")
    _wait_option(up_parser)
    add_aws_options(up_parser)
    up_parser.set_defaults(handler=cluster.up)


def _add_run(actions) -> None:
    run_parser = actions.add_parser(
        "run", help="add a fruits Spark step: fruits emr run [--wait] -- run --input s3://... --output s3://..."
    )
    run_parser.add_argument("--wait", action="store_true", help="wait for the step; exit 1 if it fails")
    run_parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra spark-submit --conf"
    )
    _wait_option(run_parser)
    _cluster_options(run_parser)
    run_parser.add_argument(
        "fruits_args", nargs=argparse.REMAINDER, help="-- then the fruits run|featurize|pca arguments"
    )
    run_parser.set_defaults(handler=steps.run)


def _add_notebook(actions) -> None:
    text = "run notebook 01, 02 or 03 headless on the cluster (papermill step; executed copy to s3://B/notebooks/runs/)"
    parser = actions.add_parser("notebook", help=text, description=text)
    parser.add_argument("name", help=f"one of: {', '.join(notebooks.HEADLESS)}")
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
        help="a notebook parameter, as papermill's -p (e.g. -p input_uri s3://B/raw/fruits-360)",
    )  # fmt: skip
    parser.add_argument("--wait", action="store_true", help="wait for the step; exit 1 if it fails")
    parser.add_argument(
        "--studio-workspace", metavar="ID", help="run it in this EMR Studio workspace instead (StartNotebookExecution)"
    )
    parser.add_argument(
        "--notebook-role",
        default=notebooks.STUDIO_ROLE,
        help="with --studio-workspace: the notebook execution's service role (default: %(default)s)",
    )
    _wait_option(parser)
    _cluster_options(parser)
    parser.set_defaults(handler=notebooks.run_notebook)
