"""Copying a workspace tree on this machine (``LocalRunner.upload_tree``/``download_tree``, the
same walk and checks the SSH runner uses): only regular files, unchanged ones skipped, symbolic
links never followed, nothing written outside the target. Over SSH: tests/integration/test_ssh.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offload.errors import EngineUnavailableError
from offload.transport.local import LocalRunner, local_files


def test_a_tree_is_copied_once_and_then_only_what_changed(tmp_path: Path) -> None:
    source, target = tmp_path / "remote", tmp_path / "local"
    (source / "out" / "deep").mkdir(parents=True)
    (source / "out" / "deep" / "a $(id).txt").write_text("a")
    (source / "b.txt").write_text("b")
    (source / ".offload" / "attempt-1").mkdir(parents=True)
    (source / ".offload" / "attempt-1" / "stdout.log").write_text("log")
    (source / ".offload" / "attempt-2").mkdir(parents=True)
    (source / ".offload" / "attempt-2" / "stdout.log").write_text("other attempt")
    runner = LocalRunner()

    def skip(path: str) -> bool:
        return path.startswith(".offload/") and not path.startswith(".offload/attempt-1")

    copied = runner.download_tree(str(source), str(target), skip=skip)
    assert sorted(copied) == [".offload/attempt-1/stdout.log", "b.txt", "out/deep/a $(id).txt"]
    assert (target / "out" / "deep" / "a $(id).txt").read_text() == "a"
    assert not (target / ".offload" / "attempt-2").exists()
    assert os.stat(target / "b.txt").st_mtime == os.stat(source / "b.txt").st_mtime
    assert runner.download_tree(str(source), str(target), skip=skip) == []  # nothing changed
    (source / "b.txt").write_text("bb")
    assert runner.download_tree(str(source), str(target), skip=skip) == ["b.txt"]
    assert runner.download_tree(str(tmp_path / "missing"), str(target)) == []


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    source = tmp_path / "remote"
    source.mkdir()
    (source / "link-to-file").symlink_to(outside / "secret.txt")
    (source / "link-to-dir").symlink_to(outside)
    (source / "real.txt").write_text("real")
    assert local_files(str(source)) == {"real.txt": (4, int((source / "real.txt").stat().st_mtime))}
    target = tmp_path / "local"
    target.mkdir()
    # A symbolic link in the target must not lead a copied file out of it either.
    (target / "out").symlink_to(outside)
    (source / "out").mkdir()
    (source / "out" / "secret.txt").write_text("overwritten?")
    with pytest.raises(EngineUnavailableError, match="leads out of"):
        LocalRunner().download_tree(str(source), str(target))
    assert (outside / "secret.txt").read_text() == "secret"
