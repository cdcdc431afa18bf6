"""Local sessions map Spark's classes from the archive; an incomplete one is never
used, and the archives of venvs that are gone are removed."""

import json
import os
import subprocess
import sys

import pytest

from fruits import class_archive


def test_a_local_session_loads_most_classes_from_the_archive(tmp_path):
    if not class_archive.usable(class_archive.archive_path()):  # conftest built it, unless this Java cannot
        message = "no class archive could be built here (see jvm/build.log in the cache)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    loaded = tmp_path / "classes.log"
    script = "from fruits.session import get_spark; print(get_spark().range(7).count())"
    environment = {**os.environ, "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={loaded}"}
    run = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=False)
    assert (run.returncode, run.stdout.strip()) == (0, "7"), run.stderr[-2000:]
    sources = loaded.read_text().splitlines()
    shared = sum(line.endswith("source: shared objects file (top)") for line in sources)
    from_jars = sum("source: jar:" in line or "source: file:" in line for line in sources)
    assert shared > 5000, (shared, from_jars)
    assert from_jars < shared / 4, (shared, from_jars)


def record(archive, size: int, jars) -> None:
    archive.with_name(f"{archive.name}.json").write_text(json.dumps({"bytes": size, "jars": str(jars)}))


def test_an_incomplete_archive_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "with space"))  # quoted in the JVM options
    archive = class_archive.archive_path()
    assert class_archive.java_options() == ""
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"\0" * 1000)  # as a copy cut short, which crashes Java (SIGBUS)
    record(archive, 195145728, tmp_path)
    assert not class_archive.usable(archive)
    assert "SharedArchiveFile" not in class_archive.java_options()
    record(archive, 1000, tmp_path)
    assert class_archive.java_options() == f'"-XX:SharedArchiveFile={archive}" -Xlog:cds=off -Xlog:cds+dynamic=off'


def test_archives_of_venvs_that_are_gone_are_removed(tmp_path):
    kept, gone = tmp_path / "spark-3.5.8-aaaa.jsa", tmp_path / "spark-3.5.8-bbbb.jsa"
    for archive, jars in ((kept, tmp_path), (gone, tmp_path / "removed-venv" / "jars")):
        archive.write_bytes(b"\0" * 10)
        record(archive, 10, jars)
    class_archive._forget_other_venvs(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [kept.name, f"{kept.name}.json"]
