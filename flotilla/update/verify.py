"""Check a staged payload before anything is written: the signature first, then the manifest,
then every file's size and sha256. The file system and ssh-keygen are the only I/O here; every
decision is in manifest.py.

    verified = verify_payload(Path("/var/lib/flotilla-update/staging"), TRUSTED_KEYS)
    verified.path("usr")  # the checked usr.img, ready to be written to the passive slot
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flotilla.process import CommandError, run

from .manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    SIGNATURE_NAMESPACE,
    SIGNER_IDENTITY,
    PayloadRefused,
    UpdateManifest,
    allowed_signers,
    file_refusal,
    parse_manifest,
)

# The keys a machine trusts: OpenSSH public key files (*.pub), shipped in the verity-protected
# /usr, so only a new signed /usr can change them.
TRUSTED_KEYS = Path("/usr/share/flotilla/update-keys")


@dataclass(frozen=True)
class VerifiedPayload:
    directory: Path
    manifest: UpdateManifest

    def path(self, role: str) -> Path:
        return self.directory / self.manifest.file(role).name


def verify_payload(directory: Path, trusted_keys: Path = TRUSTED_KEYS) -> VerifiedPayload:
    """The payload in `directory`, checked whole; PayloadRefused (the reason) otherwise."""
    manifest = verified_manifest(directory, trusted_keys)
    for expected in manifest.files:
        path = directory / expected.name
        size = path.stat().st_size if path.is_file() else None
        digest = sha256_file(path) if size == expected.size else None
        refusal = file_refusal(expected, size, digest)
        if refusal:
            raise PayloadRefused(refusal)
    return VerifiedPayload(directory, manifest)


def verified_manifest(directory: Path, trusted_keys: Path = TRUSTED_KEYS) -> UpdateManifest:
    """The manifest, read only once its signature checked out against a trusted key."""
    manifest_path = directory / MANIFEST_NAME
    signature_path = directory / SIGNATURE_NAME
    if not manifest_path.is_file():
        raise PayloadRefused(f"no {MANIFEST_NAME} in the payload")
    if not signature_path.is_file():
        raise PayloadRefused(f"the payload is unsigned: no {SIGNATURE_NAME}")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise PayloadRefused(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    if signature_path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise PayloadRefused(f"{SIGNATURE_NAME} is larger than {MAX_SIGNATURE_BYTES} bytes")
    check_signature(manifest_path, signature_path, trusted_keys)
    return parse_manifest(manifest_path.read_bytes())


def trusted_public_keys(trusted_keys: Path) -> list[str]:
    if not trusted_keys.is_dir():
        return []
    return [
        line
        for path in sorted(trusted_keys.glob("*.pub"))
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def check_signature(message: Path, signature: Path, trusted_keys: Path) -> None:
    """ssh-keygen -Y verify of `message` against the trusted keys, in the updates' namespace."""
    signers = allowed_signers(trusted_public_keys(trusted_keys))
    if not signers:
        raise PayloadRefused(f"no trusted ed25519 update keys in {trusted_keys}")
    with tempfile.TemporaryDirectory(prefix="flotilla-update-") as scratch:
        allowed = Path(scratch) / "allowed_signers"
        allowed.write_text(signers)
        # ssh-keygen reads the signed message from stdin.
        verify = (
            f'ssh-keygen -q -Y verify -f "$1" -I {SIGNER_IDENTITY} -n {SIGNATURE_NAMESPACE}'
            ' -s "$2" < "$3"'
        )
        try:
            run(["sh", "-c", verify, "sh", allowed, signature, message])
        except CommandError as error:
            said = " ".join(error.stderr.split())[-200:] or f"exit status {error.returncode}"
            raise PayloadRefused(
                f"{SIGNATURE_NAME} is not a valid signature of {MANIFEST_NAME} by a trusted key"
                f" ({said})"
            ) from error


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
