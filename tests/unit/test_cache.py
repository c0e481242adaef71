"""The build cache: a key appears only for a finished build, and inputs decide the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebuild.cache import PARTIAL_PREFIX, cached_keys, cached_tree, hash_inputs


def write_marker(directory: Path) -> None:
    (directory / "built").write_text("yes")


def test_second_call_reuses_the_tree_without_building(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(directory: Path) -> None:
        calls.append(directory)
        write_marker(directory)

    first = cached_tree(tmp_path, "k1", build)
    second = cached_tree(tmp_path, "k1", build)
    assert first == second == tmp_path / "k1"
    assert len(calls) == 1 and (first / "built").read_text() == "yes"


def test_failed_build_leaves_no_tree_under_the_key(tmp_path: Path) -> None:
    def broken(directory: Path) -> None:
        write_marker(directory)
        raise RuntimeError("mmdebstrap exploded")

    with pytest.raises(RuntimeError):
        cached_tree(tmp_path, "k1", broken)
    assert cached_keys(tmp_path) == []
    assert not list(tmp_path.glob(PARTIAL_PREFIX + "*"))


def test_interrupted_build_is_discarded_by_the_next_one(tmp_path: Path) -> None:
    leftover = tmp_path / (PARTIAL_PREFIX + "k1")
    leftover.mkdir()
    (leftover / "half").write_text("")
    tree = cached_tree(tmp_path, "k1", write_marker)
    assert sorted(p.name for p in tree.iterdir()) == ["built"]
    assert not leftover.exists()


def test_key_changes_with_any_input(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text("echo one")
    base = hash_inputs({"packages": ["systemd"]}, [("hook", hook)])
    assert base == hash_inputs({"packages": ["systemd"]}, [("hook", hook)])
    assert base != hash_inputs({"packages": ["systemd", "dbus"]}, [("hook", hook)])
    hook.write_text("echo two")
    assert base != hash_inputs({"packages": ["systemd"]}, [("hook", hook)])
    hook.write_text("echo one")
    hook.chmod(0o755)
    assert base != hash_inputs({"packages": ["systemd"]}, [("hook", hook)])
