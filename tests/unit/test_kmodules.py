"""The image keeps the kernel modules its manifest asks for, and everything those need."""

from __future__ import annotations

import pytest

from imagebuild.kmodules import modules_to_keep, parse_modules_dep, unmatched_patterns

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/net/a.ko: kernel/drivers/net/b.ko
kernel/drivers/net/b.ko: kernel/net/core/c.ko
kernel/net/core/c.ko:
kernel/sound/core/snd.ko:
"""
DEPENDENCIES = parse_modules_dep(MODULES_DEP)
EXT4 = {
    "kernel/fs/ext4/ext4.ko",
    "kernel/fs/jbd2/jbd2.ko",
    "kernel/fs/mbcache.ko",
    "kernel/lib/crc16.ko",
}
NET_CHAIN = {"kernel/drivers/net/a.ko", "kernel/drivers/net/b.ko", "kernel/net/core/c.ko"}


def test_modules_dep_lines_become_module_to_dependencies() -> None:
    assert DEPENDENCIES["kernel/fs/ext4/ext4.ko"] == (
        "kernel/lib/crc16.ko",
        "kernel/fs/mbcache.ko",
        "kernel/fs/jbd2/jbd2.ko",
    )
    assert DEPENDENCIES["kernel/fs/jbd2/jbd2.ko"] == ()
    assert len(DEPENDENCIES) == 8


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", {}),
        ("\n\n", {}),
        ("   \n", {}),
        ("kernel/a.ko:\n", {"kernel/a.ko": ()}),
        (
            "kernel/a.ko:  kernel/b.ko   kernel/c.ko  \n",
            {"kernel/a.ko": ("kernel/b.ko", "kernel/c.ko")},
        ),
        (
            "kernel/a.ko: kernel/b.ko\n\nkernel/b.ko:",
            {"kernel/a.ko": ("kernel/b.ko",), "kernel/b.ko": ()},
        ),
    ],
)
def test_blank_lines_and_extra_spaces_are_ignored(
    text: str, parsed: dict[str, tuple[str, ...]]
) -> None:
    assert parse_modules_dep(text) == parsed


@pytest.mark.parametrize(
    ("patterns", "kept"),
    [
        pytest.param((), set(), id="nothing-asked"),
        pytest.param(("sound/core/snd.ko",), {"kernel/sound/core/snd.ko"}, id="one-module"),
        pytest.param(("drivers/net/a.ko",), NET_CHAIN, id="dependencies-are-transitive"),
        pytest.param(
            ("drivers/net/b.ko",), NET_CHAIN - {"kernel/drivers/net/a.ko"}, id="not-dependents"
        ),
        pytest.param(("fs/ext4/*",), EXT4, id="dependencies-outside-the-pattern"),
        pytest.param(("fs/*",), EXT4, id="star-spans-directories"),
        pytest.param(
            ("*/core/*",),
            {"kernel/sound/core/snd.ko", "kernel/net/core/c.ko"},
            id="star-in-the-middle",
        ),
        pytest.param(
            ("fs/mbcache.ko", "lib/*"),
            {"kernel/fs/mbcache.ko", "kernel/lib/crc16.ko"},
            id="several-patterns",
        ),
        pytest.param(("kernel/fs/*",), set(), id="patterns-are-relative-to-kernel"),
        pytest.param(("*",), set(DEPENDENCIES), id="everything"),
    ],
)
def test_modules_to_keep_are_the_matches_and_their_dependencies(
    patterns: tuple[str, ...], kept: set[str]
) -> None:
    assert modules_to_keep(DEPENDENCIES, patterns) == kept


def test_a_dependency_cycle_is_kept_once_without_looping() -> None:
    cycle = parse_modules_dep("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n")
    assert modules_to_keep(cycle, ("a.ko",)) == {"kernel/a.ko", "kernel/b.ko"}


@pytest.mark.parametrize(
    ("patterns", "unmatched"),
    [
        pytest.param(("fs/ext4/*", "drivers/net/a.ko"), [], id="all-match"),
        pytest.param(
            ("fs/ext4/*", "drivers/net/virtio_nett.ko"), ["drivers/net/virtio_nett.ko"], id="typo"
        ),
        pytest.param(
            ("kernel/fs/*", "fs/*", "sound/*"),
            ["kernel/fs/*"],
            id="kernel-prefix-is-not-part-of-the-name",
        ),
        pytest.param(
            ("fs/ext5/*", "zz.ko", "lib/*"), ["fs/ext5/*", "zz.ko"], id="in-manifest-order"
        ),
    ],
)
def test_unmatched_patterns_report_likely_typos(
    patterns: tuple[str, ...], unmatched: list[str]
) -> None:
    assert unmatched_patterns(DEPENDENCIES, patterns) == unmatched
