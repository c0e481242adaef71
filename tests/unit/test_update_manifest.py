"""The manifest's format and the pure checks on it: canonical bytes, every field checked with its
name in the reason, file and target refusals."""

from __future__ import annotations

import json

import pytest

from flotilla.update.manifest import (
    BOARD,
    PayloadFile,
    PayloadRefused,
    UpdateManifest,
    allowed_signers,
    file_refusal,
    manifest_bytes,
    parse_manifest,
    target_refusal,
)

FILES = tuple(
    PayloadFile(role, name, 4096 * (i + 1), f"{i:x}" * 64)
    for i, (role, name) in enumerate(
        [("usr", "usr.img"), ("usr_verity", "usr.verity"), ("kernel", "vmlinuz"),
         ("initrd", "initrd")]
    )
)  # fmt: skip
MANIFEST = UpdateManifest("flotilla", BOARD, "0.2.0", "cd" * 32, "root=LABEL=ROOT rw", FILES)


def document() -> dict:
    return json.loads(manifest_bytes(MANIFEST))


def test_manifest_bytes_round_trip_and_are_canonical() -> None:
    data = manifest_bytes(MANIFEST)
    assert parse_manifest(data) == MANIFEST
    assert data == manifest_bytes(parse_manifest(data))
    assert data.endswith(b"}\n") and data.isascii()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(format=2), "format 2 is not 1"),
        (lambda d: d.pop("version"), "version is missing or malformed"),
        (lambda d: d.update(version="../x"), "version is missing or malformed"),
        (lambda d: d.update(root_hash="AB" * 32), "root_hash is missing or malformed"),
        (lambda d: d.update(board=7), "board is missing or malformed"),
        (lambda d: d.update(kernel_arguments="quiet usrhash=" + "0" * 64), "slot's /usr"),
        (lambda d: d.update(kernel_arguments="quiet\ninit=/bin/sh"), "line break"),
        (lambda d: d["files"].pop("initrd"), "files must be exactly"),
        (lambda d: d["files"].update(extra={}), "files must be exactly"),
        (lambda d: d["files"]["usr"].update(name="../../etc/shadow"), "files.usr.name must be"),
        (lambda d: d["files"]["kernel"].update(size=-1), "files.kernel.size -1 is not a size"),
        (lambda d: d["files"]["kernel"].update(size=True), "files.kernel.size True"),
        (lambda d: d["files"]["initrd"].update(sha256="x"), "files.initrd.sha256 'x'"),
    ],
)
def test_malformed_manifests_are_refused_naming_the_field(change, reason: str) -> None:
    raw = document()
    change(raw)
    with pytest.raises(PayloadRefused) as caught:
        parse_manifest(json.dumps(raw).encode())
    assert reason in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b"x" * 70000])
def test_what_is_not_a_manifest_is_refused(data: bytes) -> None:
    with pytest.raises(PayloadRefused):
        parse_manifest(data)


@pytest.mark.parametrize(
    ("size", "digest", "reason"),
    [
        (None, None, "usr.img is missing"),
        (100, None, "usr.img is truncated: 100 of 4096 bytes"),
        (5000, None, "usr.img is 5000 bytes, longer than the 4096 the manifest says"),
        (4096, "f" * 64, "usr.img does not match its sha256 in the manifest"),
        (4096, "0" * 64, None),
    ],
)
def test_file_refusal(size: int | None, digest: str | None, reason: str | None) -> None:
    assert file_refusal(FILES[0], size, digest) == reason


def test_target_refusal_names_what_differs() -> None:
    assert target_refusal(MANIFEST, "flotilla", BOARD) is None
    assert "board 'amd64-usr'" in (target_refusal(MANIFEST, "flotilla", "arm64-usr") or "")
    assert "for 'flotilla' images" in (target_refusal(MANIFEST, "other", BOARD) or "")


def test_allowed_signers_trusts_ed25519_keys_for_updates_only() -> None:
    text = allowed_signers(["ssh-ed25519 AAAAkey comment", "ssh-rsa AAAArsa", ""])
    assert text == ('flotilla-update namespaces="flotilla-update@flotilla" ssh-ed25519 AAAAkey\n')
