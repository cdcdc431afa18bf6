"""What lets one notebook run unchanged under ipykernel (JupyterLab, papermill,
headless on EMR) and under the PySpark kernel of EMR Studio (sparkmagic, which
sends each cell to a Livy session on the cluster).

Livy's rules, and how the notebooks follow them:

- sparkmagic runs a cell that starts with ``%`` in the local wrapper kernel,
  not on the cluster: no cell mixes a magic with code.
- Livy answers a statement with text; it shows a picture only for its
  ``%matplot plt`` magic, which renders pyplot's current figure. `figure`
  writes each figure as a PNG beside the results and, on Livy, makes it
  pyplot's current figure; a ``%matplot plt`` cell follows. `setup` gives
  IPython a ``%matplot`` magic of its own that displays that figure, so the
  same cell shows it under ipykernel too.
- Livy replaces ``sys.stdout`` for every statement and closes it afterwards:
  nothing here keeps a stream (fruits.progress looks it up when it writes).
"""

from __future__ import annotations

import io

from pyspark.sql import SparkSession

from fruits import output
from fruits.config import to_uri

FIGURES = "figures"


_latest: list = []  # the last figure `figure` wrote, for IPython's %matplot


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:  # a Livy session on the cluster: no IPython
        return None
    return get_ipython()


def setup() -> None:
    """Under IPython: what ``%matplotlib inline`` does (figures display as PNG), and
    the PySpark kernel's ``%matplot`` line magic, which displays the last figure
    `figure` wrote. Nothing elsewhere (Livy has its own %matplot)."""
    shell = _ipython()
    if shell is not None:
        from IPython.display import display

        shell.enable_matplotlib("inline")
        shell.register_magic_function(lambda line: display(*_latest[-1:]), magic_kind="line", magic_name="matplot")


def figure(spark: SparkSession, fig, output_uri: str, name: str) -> None:
    """Write ``fig`` as <output_uri>/figures/<name>.png (local, HDFS or s3://, through
    Hadoop's file system, so a headless run leaves its pictures behind) and keep
    it for the next ``%matplot plt``: pyplot's current figure on Livy."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    png = buffer.getvalue()
    uri = f"{to_uri(output_uri)}/{FIGURES}/{name}.png"
    output.write_bytes(spark, uri, png)
    print(f"figure written to {uri}")
    _latest[:] = [fig]
    if _ipython() is None:
        import matplotlib.pyplot as plt
        import numpy as np
        from PIL import Image

        plt.close("all")
        current = plt.figure(dpi=fig.dpi)
        current.figimage(np.asarray(Image.open(io.BytesIO(png))), resize=True)
