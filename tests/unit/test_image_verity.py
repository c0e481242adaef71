"""The hash tree is reproducible (same filesystem bytes, same salt, UUID and root hash) and any
changed byte changes the root hash; veritysetup itself computes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagebuild.image import sha256
from imagebuild.verity import BLOCK_SIZE, make_hash_tree, parse_format_output, root_hash_from

pytestmark = pytest.mark.skipif(not shutil.which("veritysetup"), reason="needs cryptsetup-bin")


def filesystem(path: Path, flip: int | None = None) -> Path:
    data = bytearray(b"".join(bytes([n % 251]) * BLOCK_SIZE for n in range(64)))
    if flip is not None:
        data[flip] ^= 1
    path.write_bytes(bytes(data))
    return path


def test_same_bytes_give_the_same_hash_tree_and_root_hash(tmp_path: Path) -> None:
    first = filesystem(tmp_path / "a.img")
    second = filesystem(tmp_path / "b.img")
    one = make_hash_tree(first, tmp_path / "a.verity", sha256(first))
    two = make_hash_tree(second, tmp_path / "b.verity", sha256(second))
    assert one == two
    assert (tmp_path / "a.verity").read_bytes() == (tmp_path / "b.verity").read_bytes()
    assert one.data_blocks == 64 and one.salt == sha256(first)


def test_one_flipped_byte_changes_the_root_hash(tmp_path: Path) -> None:
    good = filesystem(tmp_path / "good.img")
    bad = filesystem(tmp_path / "bad.img", flip=5 * BLOCK_SIZE + 17)
    assert (
        make_hash_tree(good, tmp_path / "good.verity", sha256(good)).root_hash
        != make_hash_tree(bad, tmp_path / "bad.verity", sha256(bad)).root_hash
    )


def test_a_filesystem_of_partial_blocks_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * (BLOCK_SIZE + 1))
    with pytest.raises(ValueError, match="not a whole number of 4096"):
        make_hash_tree(odd, tmp_path / "odd.verity", sha256(odd))


def test_the_root_hash_is_read_from_veritysetup_output() -> None:
    text = "VERITY header information for x\nSalt:   \t00ff\nRoot hash:      \t" + "a" * 64
    assert root_hash_from(parse_format_output(text)) == "a" * 64
    with pytest.raises(ValueError, match="no sha256 root hash"):
        root_hash_from(parse_format_output("Root hash: nope"))
