"""The update signing key: the one given, else a development key that reaches the output
directory only with a finished build (a failed build leaves nothing behind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.process import run
from imagebuild.payload import DEV_KEY_NAME, public_key, signing_key
from imagebuild.tree import ImageError


def test_a_development_key_is_made_once_and_kept_with_the_build(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with signing_key(None, out) as made:
        assert not out.exists()
    key = out / DEV_KEY_NAME
    assert key.stat().st_mode & 0o777 == 0o600
    assert public_key(key).split()[:2] == key.with_suffix(".pub").read_text().split()[:2]
    with signing_key(None, out) as again:
        assert again == key
    assert made != key


def test_a_failed_build_leaves_no_key_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), signing_key(None, out):
        raise RuntimeError("the build failed")
    assert not out.exists()


def test_a_given_key_is_used_and_a_missing_one_refused(tmp_path: Path) -> None:
    given = tmp_path / "release-key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", given])
    with signing_key(given, tmp_path / "out") as key:
        assert key == given
    missing = tmp_path / "nope"
    with pytest.raises(ImageError, match="no key file at"), signing_key(missing, tmp_path):
        pass


@pytest.mark.parametrize(
    ("keygen", "message"),
    [
        (["-t", "ecdsa", "-N", ""], "an ed25519 key is needed, not ecdsa-sha2-nistp256"),
        (["-t", "ed25519", "-N", "secret"], "not a readable private key without a passphrase"),
    ],
)
def test_keys_that_cannot_sign_updates_are_refused(
    tmp_path: Path, keygen: list[str], message: str
) -> None:
    key = tmp_path / "key"
    run(["ssh-keygen", "-q", *keygen, "-f", key])
    with pytest.raises(ImageError, match=message):
        public_key(key)
