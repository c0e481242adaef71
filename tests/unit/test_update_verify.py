"""A staged payload is checked whole before anything is written: real ed25519 signatures made by
ssh-keygen, real files; each refusal says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.process import run
from flotilla.update.manifest import MANIFEST_NAME, SIGNATURE_NAME, PayloadRefused
from flotilla.update.verify import verify_payload
from imagebuild.payload import sign
from tests.unit.update_payloads import make_key, make_payload, trust


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    (base / "good").mkdir()
    (base / "other").mkdir()
    good, other = make_key(base / "good"), make_key(base / "other")
    return {"good": good, "other": other, "trusted": trust(good, base / "usr")}


@pytest.fixture
def payload(tmp_path: Path, keys: dict[str, Path]) -> Path:
    directory = tmp_path / "payload"
    make_payload(directory, keys["good"])
    return directory


def refusal(payload: Path, trusted: Path) -> str:
    with pytest.raises(PayloadRefused) as caught:
        verify_payload(payload, trusted)
    return str(caught.value)


def test_a_payload_signed_by_a_trusted_key_is_accepted_whole(
    payload: Path, keys: dict[str, Path]
) -> None:
    verified = verify_payload(payload, keys["trusted"])
    assert verified.manifest.version == "1.2.3"
    assert verified.path("usr") == payload / "usr.img"
    assert verified.path("usr_verity").read_bytes().startswith(b"\x02")


def test_an_unsigned_payload_is_refused(payload: Path, keys: dict[str, Path]) -> None:
    (payload / SIGNATURE_NAME).unlink()
    assert refusal(payload, keys["trusted"]) == "the payload is unsigned: no manifest.json.sig"


def test_a_payload_signed_by_an_untrusted_key_is_refused(
    payload: Path, keys: dict[str, Path]
) -> None:
    sign_again(payload, keys["other"])
    assert "not a valid signature of manifest.json by a trusted key" in refusal(
        payload, keys["trusted"]
    )


def test_a_signature_of_another_manifest_is_refused(payload: Path, keys: dict[str, Path]) -> None:
    manifest = payload / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes().replace(b"1.2.3", b"1.2.4"))
    assert "not a valid signature" in refusal(payload, keys["trusted"])


def test_a_truncated_manifest_is_refused(payload: Path, keys: dict[str, Path]) -> None:
    manifest = payload / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes()[:100])
    assert "not a valid signature" in refusal(payload, keys["trusted"])


def test_a_signature_in_another_namespace_is_refused(payload: Path, keys: dict[str, Path]) -> None:
    """A signature the same key made for something else (a git commit) is no update signature."""
    (payload / SIGNATURE_NAME).unlink()
    run(["ssh-keygen", "-q", "-Y", "sign", "-f", keys["good"], "-n", "git",
         payload / MANIFEST_NAME])  # fmt: skip
    assert "not a valid signature" in refusal(payload, keys["trusted"])


def test_a_truncated_file_is_refused_with_its_sizes(payload: Path, keys: dict[str, Path]) -> None:
    usr = payload / "usr.img"
    whole = usr.stat().st_size
    usr.write_bytes(usr.read_bytes()[:1000])
    assert refusal(payload, keys["trusted"]) == (f"usr.img is truncated: 1000 of {whole} bytes")


def test_a_changed_file_is_refused(payload: Path, keys: dict[str, Path]) -> None:
    kernel = payload / "vmlinuz"
    data = bytearray(kernel.read_bytes())
    data[7] ^= 1
    kernel.write_bytes(bytes(data))
    assert refusal(payload, keys["trusted"]) == "vmlinuz does not match its sha256 in the manifest"


def test_a_missing_file_is_refused(payload: Path, keys: dict[str, Path]) -> None:
    (payload / "initrd").unlink()
    assert refusal(payload, keys["trusted"]) == "initrd is missing"


def test_no_trusted_keys_refuses_everything(payload: Path, tmp_path: Path) -> None:
    assert refusal(payload, tmp_path / "none").startswith("no trusted ed25519 update keys")


def sign_again(payload: Path, key: Path) -> None:
    (payload / SIGNATURE_NAME).unlink()
    sign(key, payload / MANIFEST_NAME)
