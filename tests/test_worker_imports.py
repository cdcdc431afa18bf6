"""Python workers reread an imported zip only when it changed (fruits.worker_imports)."""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
import zipimport

import pytest

from fruits.worker_imports import skip_rereading_unchanged_zips


def write_zip(archive, modules: dict[str, str]) -> None:
    with zipfile.ZipFile(archive, "w") as handle:
        for name, source in modules.items():
            handle.writestr(f"{name}.py", source)


@pytest.mark.skipif(not hasattr(zipimport.zipimporter, "invalidate_caches"), reason="Python < 3.10")
def test_an_unchanged_zip_is_not_reread_and_a_changed_one_is(tmp_path, monkeypatch):
    archive = tmp_path / "lib.zip"
    write_zip(archive, {"zipped_one": "VALUE = 1"})
    monkeypatch.syspath_prepend(str(archive))
    monkeypatch.setattr(zipimport.zipimporter, "invalidate_caches", zipimport.zipimporter.invalidate_caches)
    reads = []
    read_directory = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory", lambda path: reads.append(path) or read_directory(path))
    try:
        assert importlib.import_module("zipped_one").VALUE == 1
        skip_rereading_unchanged_zips()
        skip_rereading_unchanged_zips()  # a second call does not wrap it twice
        importlib.invalidate_caches()  # the importer's first call rereads, as before
        importlib.invalidate_caches()
        importlib.invalidate_caches()
        assert reads == [str(archive)] * 2  # when it was imported, then once

        write_zip(archive, {"zipped_one": "VALUE = 1", "zipped_two": "VALUE = 2"})
        later = archive.stat().st_mtime + 2
        os.utime(archive, (later, later))
        importlib.invalidate_caches()
        assert importlib.import_module("zipped_two").VALUE == 2
        assert len(reads) == 3
    finally:
        for name in ("zipped_one", "zipped_two"):
            sys.modules.pop(name, None)
        sys.path_importer_cache.pop(str(archive), None)
