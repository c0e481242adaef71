"""The rootfs manifest is checked before any build work starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from imagebuild.rootfs import rootfs_key
from imagebuild.spec import DEFAULT_SPEC, SpecError, load_spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rootfs.yaml"
    path.write_text(text)
    return path


def test_the_shipped_manifest_loads() -> None:
    spec = load_spec(DEFAULT_SPEC)
    assert spec.suite == "bookworm"
    assert {"systemd", "dbus", "etcd-server", "openssh-server", "python3"} <= set(spec.packages)
    assert "/usr/share/man/*" in spec.path_exclude


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "suite: bookworm\nvariant: minbase\nsources: []\npackages: []\ncolour: red\n",
            "unknown key 'colour'",
        ),
        ("suite: bookworm\nvariant: minbase\nsources: []\n", "missing key 'packages'"),
        ("suite: 12\nvariant: minbase\nsources: []\npackages: []\n", "'suite' must be a string"),
        (
            "suite: bookworm\nvariant: minbase\nsources: []\npackages: systemd\n",
            "'packages' must be a list of strings",
        ),
        ("- just\n- a list\n", "expected a mapping"),
        ("suite: [unclosed\n", "cannot read manifest"),
    ],
)
def test_bad_manifests_are_refused_with_the_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


def test_rootfs_key_follows_the_package_list() -> None:
    spec = load_spec(DEFAULT_SPEC)
    more = dataclasses.replace(spec, packages=(*spec.packages, "podman"))
    assert rootfs_key(spec) == rootfs_key(load_spec(DEFAULT_SPEC))
    assert rootfs_key(spec) != rootfs_key(more)
