"""An update payload's manifest: what it holds and the checks that refuse a bad one (pure).

A payload is a directory (or a URL prefix) of plain files:

    manifest.json      this manifest: name, board, version, root hash, command line, files
    manifest.json.sig  an SSH signature (ssh-keygen -Y sign, ed25519) of manifest.json's bytes
    usr.img            the /usr filesystem (erofs): written to a slot's USR partition
    usr.verity         its dm-verity hash tree: written to the slot's USR-*-VERITY partition
    vmlinuz, initrd    the kernel and initramfs for the slot's boot entry

The signature covers the manifest and the manifest names every file with its size and sha256,
so the one signature vouches for every byte. Every refusal is a `PayloadRefused` whose message
is the reason, and comes before anything is written anywhere but a staging directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .slots import ROOT_HASH, slot_arguments_in

FORMAT = 1
BOARD = "amd64-usr"  # Flatcar's name for what imagebuild makes: x86-64 machines, a /usr image
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
# ssh-keygen -Y's namespace: a signature made for anything else (an SSH login, a git commit)
# never passes for an update, and the reverse.
SIGNATURE_NAMESPACE = "flotilla-update@flotilla"
SIGNER_IDENTITY = "flotilla-update"
# The files of a payload, by role, with their names in the payload.
FILE_NAMES = {
    "usr": "usr.img",
    "usr_verity": "usr.verity",
    "kernel": "vmlinuz",
    "initrd": "initrd",
}
MAX_MANIFEST_BYTES = 64 * 1024
MAX_SIGNATURE_BYTES = 16 * 1024
MAX_FILE_BYTES = 16 * 1024**3
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
NAME = re.compile(r"^[a-z][a-z0-9-]*\Z")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}\Z")


class PayloadRefused(ValueError):
    """The payload is not applied; the message says why."""


@dataclass(frozen=True)
class PayloadFile:
    role: str  # a key of FILE_NAMES
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class UpdateManifest:
    name: str  # the image's name (image.yaml's name: flotilla)
    board: str  # what the payload runs on: amd64-usr
    version: str
    root_hash: str  # the dm-verity root hash of usr.img, as usrhash= carries it
    kernel_arguments: str  # the command line without the slot's /usr arguments
    files: tuple[PayloadFile, ...]

    def file(self, role: str) -> PayloadFile:
        return next(f for f in self.files if f.role == role)


def manifest_bytes(manifest: UpdateManifest) -> bytes:
    """The canonical JSON (sorted keys, ASCII, one trailing newline): same manifest, same bytes."""
    document = {
        "format": FORMAT,
        "name": manifest.name,
        "board": manifest.board,
        "version": manifest.version,
        "root_hash": manifest.root_hash,
        "kernel_arguments": manifest.kernel_arguments,
        "files": {
            f.role: {"name": f.name, "size": f.size, "sha256": f.sha256} for f in manifest.files
        },
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("ascii")


def parse_manifest(data: bytes) -> UpdateManifest:
    """The manifest's fields, every one checked; anything odd is refused with its field named."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise PayloadRefused(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadRefused(f"{MANIFEST_NAME} is not JSON (truncated?): {error}") from error
    if not isinstance(document, dict):
        raise PayloadRefused(f"{MANIFEST_NAME} is not a JSON object")
    if document.get("format") != FORMAT:
        raise PayloadRefused(
            f"{MANIFEST_NAME}: format {document.get('format')!r} is not {FORMAT}, the one this"
            " machine reads"
        )
    name = _text(document, "name", NAME)
    board = _text(document, "board", NAME)
    version = _text(document, "version", VERSION)
    root_hash = _text(document, "root_hash", ROOT_HASH)
    kernel_arguments = _text(document, "kernel_arguments", None)
    if slot_arguments_in(kernel_arguments) or "\n" in kernel_arguments:
        raise PayloadRefused(
            f"{MANIFEST_NAME}: kernel_arguments may not carry a line break or the slot's /usr"
            " arguments (the machine writes those for the slot it fills)"
        )
    files = _files(document.get("files"))
    return UpdateManifest(name, board, version, root_hash, kernel_arguments, files)


def _text(document: dict[str, object], key: str, pattern: re.Pattern[str] | None) -> str:
    value = document.get(key)
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise PayloadRefused(f"{MANIFEST_NAME}: {key} is missing or malformed ({value!r})")
    return value


def _files(raw: object) -> tuple[PayloadFile, ...]:
    if not isinstance(raw, dict) or set(raw) != set(FILE_NAMES):
        found = sorted(raw) if isinstance(raw, dict) else raw
        wanted = ", ".join(sorted(FILE_NAMES))
        raise PayloadRefused(f"{MANIFEST_NAME}: files must be exactly {wanted} (found {found!r})")
    files = []
    for role in FILE_NAMES:  # the payload's fixed order
        entry = raw[role]
        if not isinstance(entry, dict):
            raise PayloadRefused(f"{MANIFEST_NAME}: files.{role} is not an object")
        name, size, digest = entry.get("name"), entry.get("size"), entry.get("sha256")
        # Fixed names: a manifest can never point outside the payload (no paths, no "..").
        if name != FILE_NAMES[role]:
            raise PayloadRefused(f"{MANIFEST_NAME}: files.{role}.name must be {FILE_NAMES[role]!r}")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_FILE_BYTES:
            raise PayloadRefused(f"{MANIFEST_NAME}: files.{role}.size {size!r} is not a size")
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise PayloadRefused(f"{MANIFEST_NAME}: files.{role}.sha256 {digest!r} is not a sha256")
        files.append(PayloadFile(role, name, size, digest))
    return tuple(files)


def file_refusal(expected: PayloadFile, size: int | None, sha256: str | None) -> str | None:
    """Why a payload file does not match its manifest entry (None: it matches). `size` None means
    the file is missing; `sha256` None means it was not hashed (its size already failed)."""
    if size is None:
        return f"{expected.name} is missing"
    if size < expected.size:
        return f"{expected.name} is truncated: {size} of {expected.size} bytes"
    if size > expected.size:
        return f"{expected.name} is {size} bytes, longer than the {expected.size} the manifest says"
    if sha256 != expected.sha256:
        return f"{expected.name} does not match its sha256 in the manifest"
    return None


def target_refusal(manifest: UpdateManifest, name: str, board: str) -> str | None:
    """Why this payload is not for this machine (None: it is)."""
    if manifest.name != name:
        return f"the payload is for {manifest.name!r} images, this machine runs {name!r}"
    if manifest.board != board:
        return f"the payload is built for board {manifest.board!r}, this machine is {board!r}"
    return None


def allowed_signers(public_keys: list[str]) -> str:
    """ssh-keygen's allowed-signers text trusting each OpenSSH public key line for updates only."""
    lines = []
    for key in public_keys:
        fields = key.split()
        if len(fields) >= 2 and fields[0] == "ssh-ed25519":
            lines.append(
                f'{SIGNER_IDENTITY} namespaces="{SIGNATURE_NAMESPACE}" {fields[0]} {fields[1]}\n'
            )
    return "".join(lines)
