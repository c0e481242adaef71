"""A payload fetched over real HTTP on loopback from `imagebuild serve-update`: verified as it
arrives, and refused (with the reason) when unsigned, wrongly signed or cut short, with nothing
big downloaded once the manifest failed."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flotilla.update.fetch import FetchFailed, fetch_payload
from flotilla.update.manifest import SIGNATURE_NAME, PayloadRefused
from imagebuild.payload import sign
from imagebuild.serve import PayloadHandler, make_server
from tests.unit.update_payloads import make_key, make_payload, trust

REPO = Path(__file__).resolve().parents[2]


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


@contextmanager
def serving(directory: Path, handler: type[PayloadHandler] | None = None) -> Iterator[str]:
    server = make_server(directory, 0)
    if handler is not None:
        server.RequestHandlerClass = lambda *a, **k: handler(*a, directory=str(directory), **k)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def refusal(url: str, staging: Path, trusted: Path) -> str:
    with pytest.raises(PayloadRefused) as caught:
        fetch_payload(url, staging, trusted, timeout=10)
    return str(caught.value)


def test_serve_update_serves_a_payload_that_fetches_and_verifies(
    payload: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", "from imagebuild.cli import main; main()", "serve-update",
         "--port", "0", "--dir", str(payload)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        verified = fetch_payload(url, tmp_path / "staging", keys["trusted"], timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert verified.manifest.version == "1.2.3"
    for role in ("usr", "usr_verity", "kernel", "initrd"):
        name = verified.manifest.file(role).name
        assert verified.path(role).read_bytes() == (payload / name).read_bytes()


def test_serve_update_without_a_payload_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from imagebuild.cli import main; main()", "serve-update",
         "--port", "0", "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "holds no update payload (no manifest.json)" in result.stderr


def test_an_unsigned_payload_is_refused_before_any_file_is_fetched(
    payload: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    (payload / SIGNATURE_NAME).unlink()
    staging = tmp_path / "staging"
    with serving(payload) as url:
        reason = refusal(url, staging, keys["trusted"])
    assert reason == "the payload is unsigned: no manifest.json.sig"
    assert not (staging / "usr.img").exists()


def test_a_wrongly_signed_payload_is_refused_before_any_file_is_fetched(
    payload: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    (payload / SIGNATURE_NAME).unlink()
    sign(keys["other"], payload / "manifest.json")
    staging = tmp_path / "staging"
    with serving(payload) as url:
        reason = refusal(url, staging, keys["trusted"])
    assert "not a valid signature of manifest.json by a trusted key" in reason
    assert sorted(p.name for p in staging.iterdir()) == ["manifest.json", "manifest.json.sig"]


def test_a_truncated_file_on_the_server_is_refused(
    payload: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    usr = payload / "usr.img"
    whole = usr.stat().st_size
    usr.write_bytes(usr.read_bytes()[:1000])
    staging = tmp_path / "staging"
    with serving(payload) as url:
        reason = refusal(url, staging, keys["trusted"])
    assert reason == f"usr.img is truncated: 1000 of {whole} bytes"
    assert not (staging / "usr.img").exists()


class CutShort(PayloadHandler):
    """Promises the whole file, sends half of usr.img, then closes the connection."""

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        data = source.read()
        if self.path.endswith("usr.img"):
            data = data[: len(data) // 2]
            self.close_connection = True
        outputfile.write(data)


def test_a_connection_cut_mid_file_is_refused_as_truncated(
    payload: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    whole = (payload / "usr.img").stat().st_size
    with serving(payload, CutShort) as url:
        reason = refusal(url, tmp_path / "staging", keys["trusted"])
    assert reason == f"usr.img is truncated: {whole // 2} of {whole} bytes"


def test_a_longer_file_is_refused_without_reading_it_all(
    payload: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    with open(payload / "vmlinuz", "ab") as handle:
        handle.write(b"\0" * 10_000_000)
    with serving(payload) as url:
        reason = refusal(url, tmp_path / "staging", keys["trusted"])
    assert reason.startswith("vmlinuz is ") and "longer than the" in reason


def test_an_unreachable_source_fails_with_the_url(keys: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    with pytest.raises(FetchFailed, match=f"127.0.0.1:{port}"):
        fetch_payload(f"http://127.0.0.1:{port}/", tmp_path / "staging", keys["trusted"], 5)
