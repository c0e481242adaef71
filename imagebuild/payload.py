"""The update payload a build emits (build/update/) and the key that signs it.

The payload is the image's slot content as flotilla/update/manifest.py describes it: the /usr
filesystem, its hash tree, the kernel and initramfs, and a manifest naming the version, the root
hash and every file's size and sha256, signed with ssh-keygen -Y (ed25519). Machines trust the
public half of the key because the build puts it in /usr/share/flotilla/update-keys/, inside
the verity-protected /usr.

Without --signing-key a development key is made once in the output directory
(build/update-signing-key) and reused, so rebuilds stay reproducible and keep trusting it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from flotilla.process import CommandError, run
from flotilla.update.manifest import (
    FILE_NAMES,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SIGNATURE_NAMESPACE,
    PayloadFile,
    UpdateManifest,
    manifest_bytes,
    parse_manifest,
)

from .tree import ImageError

DEV_KEY_NAME = "update-signing-key"
TRUSTED_KEYS_DIR = "share/flotilla/update-keys"  # under /usr
TRUSTED_KEY_FILE = "image-signing-key.pub"


@contextmanager
def signing_key(given: Path | None, out: Path) -> Iterator[Path]:
    """The key to sign with: the one given, else the output directory's development key. A
    new development key is made aside and moved into `out` only when the build succeeds, so a
    failed build leaves nothing behind and the next one makes its own."""
    if given is not None:
        if not given.is_file():
            raise ImageError(f"--signing-key: no key file at {given}")
        yield given
        return
    key = out / DEV_KEY_NAME
    if key.is_file():
        yield key
        return
    with tempfile.TemporaryDirectory(prefix="flotilla-signing-key-") as scratch:
        made = Path(scratch) / DEV_KEY_NAME
        comment = "flotilla update signing (development key)"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", made])
        yield made
        out.mkdir(parents=True, exist_ok=True)
        for path in (made.with_suffix(".pub"), made):  # the private key last: it marks "made"
            shutil.move(path, out / path.name)


def public_key(key: Path) -> str:
    """The OpenSSH public key line of a private key (an ed25519 key without a passphrase)."""
    try:
        line = run(["ssh-keygen", "-y", "-P", "", "-f", key]).stdout.strip()
    except CommandError as error:
        raise ImageError(
            f"--signing-key {key}: not a readable private key without a passphrase"
            f" ({' '.join(error.stderr.split())})"
        ) from error
    if not line.startswith("ssh-ed25519 "):
        raise ImageError(f"--signing-key {key}: an ed25519 key is needed, not {line.split()[0]}")
    return line


def install_trusted_key(usr: Path, key_line: str) -> None:
    """Put the public key where machines look for update keys (usr is the tree's /usr)."""
    directory = usr / TRUSTED_KEYS_DIR
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    (directory / TRUSTED_KEY_FILE).write_text(key_line + "\n")


def write_payload(
    directory: Path,
    sources: dict[str, Path],
    manifest: UpdateManifest,
    key: Path,
) -> None:
    """Copy each file (by role) into `directory`, write the manifest and sign it."""
    directory.mkdir()
    for role, name in FILE_NAMES.items():
        shutil.copyfile(sources[role], directory / name)
    (directory / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    sign(key, directory / MANIFEST_NAME)
    if not (directory / SIGNATURE_NAME).is_file():
        raise ImageError(f"ssh-keygen wrote no {SIGNATURE_NAME}")


def sign(key: Path, message: Path) -> None:
    """message.sig: an SSH signature in the updates' namespace (ed25519 signatures are
    deterministic, so the same manifest and key give the same bytes)."""
    try:
        run(["ssh-keygen", "-q", "-Y", "sign", "-f", key, "-n", SIGNATURE_NAMESPACE, message])
    except CommandError as error:
        raise ImageError(f"cannot sign with {key}: {' '.join(error.stderr.split())}") from error


def payload_file(role: str, path: Path, sha256: str) -> PayloadFile:
    return PayloadFile(role, FILE_NAMES[role], path.stat().st_size, sha256)


def republish(
    payload: Path, key: Path, directory: Path, version: str, root_hash: str | None = None
) -> Path:
    """`payload` (a build's update/ directory) again as `version` in `directory`, signed with
    `key`: the files hard-linked, the manifest rewritten (with another root hash, to break it on
    purpose). For tests and benchmarks of updates: the /usr bytes stay those of the build, so
    the version a machine runs is the one its boot entry names."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for path in payload.iterdir():
        if path.name not in (MANIFEST_NAME, SIGNATURE_NAME):
            os.link(path, directory / path.name)
    manifest = parse_manifest((payload / MANIFEST_NAME).read_bytes())
    manifest = replace(manifest, version=version, root_hash=root_hash or manifest.root_hash)
    (directory / MANIFEST_NAME).write_bytes(manifest_bytes(manifest))
    sign(key, directory / MANIFEST_NAME)
    return directory
