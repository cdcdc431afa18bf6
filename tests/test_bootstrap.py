"""The EMR bootstrap action, run for real with its local switches (no sudo, no S3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.markers import Marker

from fruits import __version__
from tests.conftest import ROOT, modification_times

SCRIPT = ROOT / "bootstrap" / "install-python-deps.sh"
# What the wheel build reads; built from a copy so no build/ lands in the shared tree.
BUILD_INPUTS = ("pyproject.toml", "README.md", "fruits")
# A first install unpacks onnxruntime, pyarrow & co. on 2 cores; a second one only checks the marker.
INSTALL_TIMEOUT_S = 1800


LOCK = ROOT / "bootstrap" / "requirements-emr.lock"
# EMR 7 runs Amazon Linux 2023 (glibc 2.34) on x86_64 and Graviton (aarch64) nodes.
NODE_PLATFORMS = {
    arch: [f"manylinux_2_{minor}_{arch}" for minor in range(17, 35)] + [f"manylinux2014_{arch}"]
    for arch in ("x86_64", "aarch64")
}


NODE_PYTHON = {"python_version": "3.11", "python_full_version": "3.11.11", "sys_platform": "linux"}
NODE_PYTHON |= {"implementation_name": "cpython", "platform_system": "Linux", "os_name": "posix"}


def pins() -> dict[str, str]:
    """name -> version of the lock's packages that EMR's CPython 3.11 on Linux installs."""
    pinned = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            requirement, _, marker = line.rstrip(" \\").partition(";")
            if not marker.strip() or Marker(marker).evaluate(NODE_PYTHON):
                name, version = requirement.strip().split("==")
                pinned[name] = version
    return pinned


IMPORTS_ON_A_NODE = """
import importlib.util, fruits, onnxruntime
print(fruits.__file__)
for name in ("tensorflow", "keras", "pyspark"):  # EMR provides Spark; the model comes converted
    print(f"{name}: {'present' if importlib.util.find_spec(name) else 'absent'}")
"""


def venv_megabytes(venv: Path) -> float:
    return sum(path.stat().st_size for path in venv.rglob("*") if path.is_file() and not path.is_symlink()) / 1e6


def script_env(tmp_path: Path, **switches: str) -> dict[str, str]:
    env = dict(os.environ)
    # conftest moves XDG_CACHE_HOME to a temp dir: keep pip on the user's download cache.
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR") or str(Path(os.environ["HOME"]) / ".cache" / "pip")
    env.update(
        FRUITS_VENV=str(tmp_path / "venv"),
        FRUITS_LOG=str(tmp_path / "log" / "bootstrap.log"),
        FRUITS_SUDO="",
        FRUITS_PYTHON=sys.executable,
        TMPDIR=str(tmp_path),
    )
    env.update(switches)
    return env


def run_script(env: dict[str, str], *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run it as EMR does (executable, own shebang), with a umask that hides files from other users."""
    start = time.monotonic()
    result = subprocess.run(
        [SCRIPT, *args],
        env=env,
        cwd=cwd,
        umask=0o077,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    return result, time.monotonic() - start


def code_folder(path: Path, requirements: str | None = "numpy==1.26.4\n", wheels: int = 1) -> Path:
    path.mkdir()
    if requirements is not None:
        (path / "requirements-emr.lock").write_text(requirements)
    for index in range(wheels):
        (path / f"fruits-0.0.{index}-py3-none-any.whl").write_bytes(b"not a real wheel")
    return path


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """What `fruits emr up` puts under s3://BUCKET/code/: the project's wheel and the nodes' lock file."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    code = tmp_path_factory.mktemp("code")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", code, source],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert [p.name for p in code.glob("fruits-*.whl")] == [f"fruits-{__version__}-py3-none-any.whl"]
    shutil.copy2(LOCK, code / LOCK.name)
    return code


def test_bootstrap_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        message = "shellcheck not installed (apt-get install shellcheck)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run([shellcheck, SCRIPT], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_bootstrap_installs_the_venv_once_then_does_nothing(tmp_path, code):
    env = script_env(tmp_path, FRUITS_CODE_DIR=str(code))
    venv = tmp_path / "venv"
    log = tmp_path / "log" / "bootstrap.log"

    first, first_s = run_script(env, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    versions = pins()
    for line in (
        f"fruits {__version__}",
        f"onnxruntime {versions['onnxruntime']}",
        f"pyarrow {versions['pyarrow']}",
        f"pandas {versions['pandas']}",
        f"numpy {versions['numpy']}",
        f"PIL {versions['pillow']}",
    ):
        assert f"  {line}\n" in first.stdout
    assert f"installed in {venv} (fingerprint " in first.stdout
    assert "upgrading pip" not in first.stdout  # uv installed the lock: pip only installed uv
    assert "falling back to pip" not in first.stdout
    assert first.stdout in log.read_text()

    # The venv's own interpreter imports the installed wheel, not the repo's sources.
    imported = subprocess.run(
        [venv / "bin" / "python", "-I", "-c", IMPORTS_ON_A_NODE],  # -I: as on a node, no PYTHONPATH
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    installed = Path(imported.stdout.splitlines()[0])
    assert imported.stdout.splitlines()[1:] == ["tensorflow: absent", "keras: absent", "pyspark: absent"]
    print(f"bootstrap: first run {first_s:.0f} s, venv {venv_megabytes(venv):.0f} MB")
    assert installed.is_relative_to(venv / "lib" / "python3.11" / "site-packages")
    # YARN containers run as other users: readable and traversable by all despite umask 077.
    assert installed.stat().st_mode & 0o004
    assert installed.parent.stat().st_mode & 0o005 == 0o005
    assert venv.stat().st_mode & 0o005 == 0o005
    marker = venv / ".fruits-bootstrap.sha256"
    fingerprint = marker.read_text().strip()
    assert len(fingerprint) == 64
    installed_before = modification_times(venv, skip_suffix=".pyc")  # any import may add bytecode

    second, _ = run_script(env, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"already installed in {venv} (fingerprint {fingerprint}); nothing to do" in second.stdout
    assert "installing" not in second.stdout
    assert modification_times(venv, skip_suffix=".pyc") == installed_before  # nothing reinstalled or rewritten
    assert log.read_text() == first.stdout + second.stdout

    # Changed requirements rebuild the venv; a failing pip step stops the run, loudly.
    changed = code_folder(tmp_path / "changed", requirements="fruits-no-such-package==0.0.0\n")
    third, _ = run_script(script_env(tmp_path, FRUITS_CODE_DIR=str(changed)), cwd=tmp_path)
    assert third.returncode != 0
    assert f"{venv} exists but does not match" in third.stdout
    assert (
        f"installing {changed}/requirements-emr.lock (wheels only, every file checked against its hash)\n"
        in third.stdout
    )
    assert '-r "$REQUIREMENTS"` exited with status 1\n' in third.stdout
    assert f"bootstrap failed; full log: {log}" in third.stdout
    assert not (venv / ".fruits-bootstrap.sha256").exists()


@pytest.mark.parametrize(
    ("requirements", "wheels", "message"),
    [
        (None, 0, "requirements-emr.lock not found in {code}"),
        (None, 1, "requirements-emr.lock not found in {code}"),
        ("pyspark==3.5.8\n", 0, "expected exactly one fruits-*.whl in {code}, found 0"),
        (
            "pyspark==3.5.8\n",
            2,
            "expected exactly one fruits-*.whl in {code}, found 2: "
            "fruits-0.0.0-py3-none-any.whl fruits-0.0.1-py3-none-any.whl",
        ),
    ],
)
def test_missing_code_fails_before_installing_anything(tmp_path, requirements, wheels, message):
    code = code_folder(tmp_path / "code", requirements, wheels)
    result, _ = run_script(script_env(tmp_path, FRUITS_CODE_DIR=str(code)), cwd=tmp_path)
    log = tmp_path / "log" / "bootstrap.log"
    assert result.returncode == 1
    assert f"ERROR: {message.format(code=code)}\n" in result.stdout
    assert f"bootstrap failed; full log: {log}\n" in result.stdout
    assert log.read_text() == result.stdout
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "usage: "),
        (("/data/code",), "expected an s3:// prefix holding requirements-emr.lock and fruits-*.whl, got '/data/code'"),
        (("s3://",), "expected an s3:// prefix"),
    ],
)
def test_without_a_code_folder_it_needs_an_s3_prefix(tmp_path, args, message):
    result, _ = run_script(script_env(tmp_path), *args, cwd=tmp_path)
    assert result.returncode == 1
    assert f"ERROR: {message}" in result.stdout


def test_s3_prefix_is_downloaded_with_the_aws_cli_to_a_temp_dir(tmp_path):
    """A stand-in `aws` records its arguments and copies a local folder to the destination."""
    bucket = code_folder(tmp_path / "bucket", wheels=2)
    calls = tmp_path / "aws-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nfor last; do :; done\ncp -R {bucket}/. "$last"\n')
    aws.chmod(0o755)
    env = script_env(tmp_path, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    env["TMPDIR"] = str(work)

    result, _ = run_script(env, "s3://bucket/code", cwd=tmp_path)

    assert result.returncode == 1
    [call] = calls.read_text().splitlines()
    *options, source, destination = call.split()
    assert options == [
        "s3",
        "cp",
        "--recursive",
        "--only-show-errors",
        "--exclude",
        "*",
        "--include",
        "requirements-emr.lock",
        "--include",
        "fruits-*.whl",
    ]
    assert source == "s3://bucket/code/"
    assert Path(destination).parent.parent == work
    assert f"expected exactly one fruits-*.whl in {destination.rstrip('/')}, found 2" in result.stdout
    assert list(work.iterdir()) == [], "the download's temp dir is removed on exit"


def test_a_failing_command_names_its_line_and_the_log(tmp_path):
    code = code_folder(tmp_path / "code")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    venv = blocker / "venv"
    env = script_env(tmp_path, FRUITS_CODE_DIR=str(code), FRUITS_VENV=str(venv))
    result, _ = run_script(env, cwd=tmp_path)
    log = tmp_path / "log" / "bootstrap.log"
    assert result.returncode == 1
    assert f"run: mkdir -p {venv}\n" in result.stdout
    assert "Not a directory" in result.stdout
    assert '`"$@"` exited with status 1\n' in result.stdout
    assert "ERROR:   in as_root, called from ensure_dir at line " in result.stdout
    assert f"bootstrap failed; full log: {log}\n" in result.stdout
    assert log.read_text() == result.stdout


def test_the_lock_has_no_tensorflow_and_no_pyspark():
    names = set(pins())
    assert {"onnxruntime", "pyarrow", "pandas", "numpy", "pillow", "boto3", "papermill"} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "pyspark", "h5py"}
    requirements = [line for line in LOCK.read_text().splitlines() if "==" in line and not line.startswith("#")]
    assert all(line.endswith("\\") for line in requirements)  # every pin is followed by its hashes


@pytest.mark.parametrize("arch", sorted(NODE_PLATFORMS))
def test_every_locked_package_has_a_wheel_for_the_nodes(tmp_path, arch):
    """pip resolves the lock for EMR's Python on each node architecture, wheels only
    (metadata only: nothing is installed); Graviton core types rely on this."""
    platforms = [option for platform in NODE_PLATFORMS[arch] for option in ("--platform", platform)]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    command += ["--only-binary=:all:", "--require-hashes", "--python-version", "3.11", "--implementation", "cp"]
    command += [*platforms, "--target", str(tmp_path / "target"), "--report", str(report), "-r", str(LOCK)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = {
        item["metadata"]["name"].lower().replace("_", "-"): item["download_info"]["url"].rsplit("/", 1)[1]
        for item in json.loads(report.read_text())["install"]
    }
    assert set(chosen) == {name.lower() for name in pins()}
    assert all(file.endswith(".whl") for file in chosen.values())
    assert arch in chosen["onnxruntime"], chosen
    assert arch in chosen["pyarrow"], chosen
