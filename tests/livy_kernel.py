"""Runs a notebook the way EMR Studio's PySpark kernel does, in a fresh process.

Written from the documented behaviour of sparkmagic and Livy:

- sparkmagic's wrapper kernel (``UserCodeParser.get_code_to_run``) sends a cell
  to Livy as one statement, except a cell that starts with ``%``: ``%%local``
  and every magic it does not know run in the local IPython kernel, the code
  after the magic line included; ``%matplot`` is its own line magic, which
  sends ``%matplot <line>`` to Livy and shows the picture Livy returns.
- Livy's PySpark REPL keeps one namespace per session in which ``spark`` and
  ``sc`` already exist; it gives every statement a new ``sys.stdout`` and
  ``sys.stderr`` and closes them afterwards; it returns the value of a final
  expression as text (never a rich display), and for ``%matplot plt`` the
  current pyplot figure as image/png. A statement that raises fails.
- EMR Studio's parameterized execution inserts the parameters as a cell of
  assignments after the cell tagged ``parameters``.
- The driver's working directory is a YARN container's: neither the repository
  nor notebooks/ (the caller starts this script in an empty folder).

Usage: python livy_kernel.py NOTEBOOK RESULT.json [NAME=JSON_VALUE ...]
Writes a JSON list, one entry per cell: where it ran, and its result.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import sys
import traceback


class LivySession:
    """The cluster side: one namespace, statements with their own streams."""

    def __init__(self, spark) -> None:
        self.namespace = {"spark": spark, "sc": spark.sparkContext, "__name__": "__main__"}

    def statement(self, code: str) -> dict:
        stream = io.StringIO()
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = stream
        try:
            if code.split(None, 1)[:1] == ["%matplot"]:
                return {"status": "ok", "image/png": self._matplot(code.split(None, 1)[1].strip())}
            tree = ast.parse(code)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<statement>", "exec"), self.namespace)
            value = eval(compile(ast.Expression(last.value), "<statement>", "eval"), self.namespace) if last else None
            text = stream.getvalue() + (repr(value) if value is not None else "")
            return {"status": "ok", "text/plain": text}
        except BaseException as exc:  # SystemExit included: Livy reports it as the statement's error
            return {
                "status": "error",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": traceback.format_exc(),
            }
        finally:
            sys.stdout, sys.stderr = saved
            stream.close()

    def _matplot(self, name: str) -> str:
        figure = eval(name, self.namespace).gcf()
        png = io.BytesIO()
        figure.savefig(png, format="png")
        return base64.b64encode(png.getvalue()).decode()


def local_statement(code: str, namespace: dict) -> dict:
    """The wrapper kernel's side: a line magic it does not know is skipped here (no
    IPython), and the rest of the cell runs locally, never reaching the cluster."""
    body = code.split("\n", 1)[1] if "\n" in code else ""
    try:
        exec(body, namespace)
    except Exception as exc:
        return {"status": "error", "ename": type(exc).__name__, "evalue": str(exc)}
    return {"status": "ok", "text/plain": ""}


def cells_with_parameters(notebook: dict, parameters: dict) -> list[str]:
    sources = []
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        sources.append("".join(cell["source"]))
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            sources.append("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
    return sources


def main(notebook_path: str, result_path: str, assignments: list[str]) -> int:
    from pyspark.sql import SparkSession

    parameters = {name: json.loads(value) for name, value in (item.split("=", 1) for item in assignments)}
    spark = SparkSession.builder.master("local[2]").appName("livy-session").getOrCreate()  # Livy starts it first
    livy, local = LivySession(spark), {"__name__": "__main__"}
    results = []
    with open(notebook_path, encoding="utf-8") as handle:
        notebook = json.load(handle)
    for code in cells_with_parameters(notebook, parameters):
        if code.split(None, 1)[:1] == ["%matplot"]:
            results.append({"ran": "livy", "code": code, **livy.statement(code)})
        elif code.startswith("%"):
            results.append({"ran": "local", "code": code, **local_statement(code, local)})
        else:
            results.append({"ran": "livy", "code": code, **livy.statement(code)})
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
