"""The README is part of the product: its commands and examples must work."""

import json
import re
import shlex

from tests.conftest import ROOT, SAMPLE

README = (ROOT / "README.md").read_text()


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(block.strip() for block in fenced("bash") if "test" in block and "\n" not in block.strip())
    assert test_command == "make test"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_python_example_runs_as_written(spark, weights, tmp_path, monkeypatch, capsys):
    (example,) = fenced("python")
    (tmp_path / "data_sample").symlink_to(SAMPLE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRUITS_WEIGHTS", str(weights))
    exec(compile(example, "README.md", "exec"), {})
    manifest = json.loads((tmp_path / "out" / "api-demo" / "manifest.json").read_text())
    assert capsys.readouterr().out.split() == ["36", str(manifest["pca_k"])]
    assert manifest["explained_variance"] >= 0.9


def test_every_fruits_command_in_the_readme_parses():
    from fruits.cli import build_parser

    commands = [
        line.split("  #")[0].replace('"$(curl -s https://checkip.amazonaws.com)/32"', "203.0.113.7/32")
        for block in fenced("bash")
        for line in block.splitlines()
        if line.startswith("fruits ") and "[" not in line and "COMMAND" not in line  # not the synopsis
    ]
    assert len(commands) == 14
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])


def test_every_option_in_the_readme_table_exists():
    from fruits.cli import build_parser

    documented = set(re.findall(r"^\| `(--[a-z-]+)", README, flags=re.MULTILINE))
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    accepted = {option for action in run._actions for option in action.option_strings}
    assert len(documented) >= 15
    assert documented <= accepted
