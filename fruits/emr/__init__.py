"""Amazon EMR: a cluster for `fruits` Spark steps, from `fruits emr up` to `fruits emr down`.

One concern a module; only `commands` knows argparse, and every AWS call goes
through `fruits.aws.client`, inside `user_errors`:

- spec: ``env/cluster.json``, a RunJobFlow request with ``${placeholder}``s, and the options that change it
- iam: the project's roles; the instance role reaches only the project bucket
- network: the subnet, the cluster's EMR-managed security groups, and the group that lets SSH in from one range only
- memory: Spark's executor and driver sizes, checked against the instance types
- code: the wheel, the nodes' lock file, step entry script, bootstrap action and ONNX model uploaded to the bucket
- cluster: the remembered cluster, waiting, and `up`, `ui`, `down`
- steps: `run` (a Spark step) and `status` (the cluster and its steps)
- notebooks: `notebook`, a project notebook headless on the cluster (papermill step, or EMR Studio)
- clone: a reusable spec of a running cluster
- cost: hours and list-price cost of featurizing N images
- commands: the `fruits emr` subcommands and their options
"""
