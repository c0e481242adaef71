"""Download a payload over HTTP into a staging directory, checking as it goes (I/O).

The manifest and its signature come first and are checked before any large file is asked for;
each file is then streamed with its manifest size as the limit and hashed on the way, so a
payload that is unsigned, wrongly signed, truncated or altered is refused (PayloadRefused, with
the reason) having written nothing but the staging directory.

    payload = fetch_payload("http://10.0.2.2:8470/", Path("/var/lib/flotilla-update/staging"))
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    PayloadFile,
    PayloadRefused,
    UpdateManifest,
    file_refusal,
)
from .verify import TRUSTED_KEYS, VerifiedPayload, verified_manifest

CHUNK = 1 << 20
TIMEOUT = 30.0  # seconds without a byte before giving up


class FetchFailed(RuntimeError):
    """The payload source could not be reached or answered with an error."""


def fetch_payload(
    base_url: str,
    staging: Path,
    trusted_keys: Path = TRUSTED_KEYS,
    timeout: float = TIMEOUT,
    approve: Callable[[UpdateManifest], None] | None = None,
) -> VerifiedPayload:
    """The payload at `base_url` (a directory URL), verified, in `staging` (emptied first).
    `approve` sees the verified manifest before any large file is asked for, and refuses it
    by raising (the update agent's version, target and room checks)."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    download(base, MANIFEST_NAME, staging, MAX_MANIFEST_BYTES, timeout, missing="no manifest")
    download(
        base,
        SIGNATURE_NAME,
        staging,
        MAX_SIGNATURE_BYTES,
        timeout,
        missing=f"the payload is unsigned: no {SIGNATURE_NAME}",
    )
    manifest = verified_manifest(staging, trusted_keys)
    if approve is not None:
        approve(manifest)
    for expected in manifest.files:
        download_file(base, expected, staging, timeout)
    return VerifiedPayload(staging, manifest)


def download(base: str, name: str, staging: Path, limit: int, timeout: float, missing: str) -> None:
    """A small file, refused if longer than `limit`."""
    with open_url(urllib.parse.urljoin(base, name), timeout, missing) as response:
        data = response.read(limit + 1)
    if len(data) > limit:
        raise PayloadRefused(f"{name} is larger than {limit} bytes")
    (staging / name).write_bytes(data)


def download_file(base: str, expected: PayloadFile, staging: Path, timeout: float) -> None:
    """Stream one payload file, never past its manifest size, hashing it on the way."""
    digest = hashlib.sha256()
    size = 0
    partial = staging / f".{expected.name}.part"
    with (
        open_url(
            urllib.parse.urljoin(base, expected.name), timeout, f"{expected.name} is missing"
        ) as response,
        open(partial, "wb") as out,
    ):
        try:
            while chunk := response.read(min(CHUNK, expected.size + 1 - size)):
                size += len(chunk)
                if size > expected.size:
                    break
                digest.update(chunk)
                out.write(chunk)
        except http.client.IncompleteRead as error:  # the server promised more than it sent
            size += len(error.partial)
        except OSError as error:
            partial.unlink()
            raise FetchFailed(f"{expected.name}: {error}") from error
    refusal = file_refusal(expected, size, digest.hexdigest() if size == expected.size else None)
    if refusal:
        partial.unlink()
        raise PayloadRefused(refusal)
    partial.rename(staging / expected.name)


def open_url(url: str, timeout: float, missing: str) -> http.client.HTTPResponse:
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise PayloadRefused(missing) from error
        raise FetchFailed(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise FetchFailed(f"{url}: {getattr(error, 'reason', error)}") from error
