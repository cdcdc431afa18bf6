"""Whole-file writes: a reader sees the old manifest, none, or the new one, never part of one."""

from __future__ import annotations

import json
from pathlib import Path

from fruits import output


class WatchedStream:
    """A Hadoop output stream that lets a reader look before and after each write."""

    def __init__(self, stream, look) -> None:
        self.stream, self.look = stream, look

    def write(self, data) -> None:
        self.look()
        self.stream.write(data)
        self.stream.flush()
        self.look()

    def close(self) -> None:
        self.stream.close()
        self.look()


class WatchedFileSystem:
    """The real Hadoop file system, whose new files are WatchedStreams."""

    def __init__(self, fs, look) -> None:
        self.fs, self.look = fs, look

    def create(self, path, overwrite):
        return WatchedStream(self.fs.create(path, overwrite), self.look)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_a_manifest_is_never_seen_half_written(spark, tmp_path, monkeypatch):
    root = f"file://{tmp_path}"
    old = {"run_id": "old"}
    output.write_manifest(spark, root, old)
    new = {"run_id": "new", "paths": [f"file:/images/Training/Kiwi/{i}.jpg" for i in range(5000)]}
    seen: list[str] = []

    def look() -> None:
        manifest = Path(tmp_path / output.MANIFEST)
        try:
            seen.append(json.loads(manifest.read_text())["run_id"])
        except FileNotFoundError:
            seen.append("none")
        except json.JSONDecodeError:
            seen.append("torn")

    real_fs_path = output._fs_path

    def watched(spark_, uri):
        fs, path = real_fs_path(spark_, uri)
        return WatchedFileSystem(fs, look), path

    monkeypatch.setattr(output, "_fs_path", watched)
    output.write_manifest(spark, root, new)
    assert len(seen) >= 3
    assert set(seen) <= {"old", "none", "new"}, seen  # never "torn"
    assert seen[0] == "old"  # the old manifest stays whole while the new one is written
    assert output.read_manifest(spark, root) == new
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [output.MANIFEST]
