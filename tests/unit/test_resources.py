"""Where the tools find their own files, and where they put caches: never the checkout by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla import resources
from imagebuild.cache import SYSTEM_CACHE, default_cache_root
from imagebuild.tree import copy_image_files, machine_sources

REPO = Path(__file__).resolve().parents[2]
# Trees copied into the image and the rootfs as they are: a wheel carries no symlink (it would
# copy the file a link points to on the build host), so an installed imagebuild would build
# another image than the checkout. Links the image needs are made by the recipe.
COPIED_TREES = ("imagebuild/image-files", "imagebuild/rootfs-files")


def test_data_is_found_inside_the_flotilla_package() -> None:
    units = resources.data_path("units")
    assert units == REPO / "flotilla/data/units"
    assert (units / "fleetd.service").is_file()
    assert (resources.data_path("cloud-config") / "member.ign.yaml.j2").is_file()


def test_a_missing_data_file_says_the_package_is_incomplete() -> None:
    with pytest.raises(resources.MissingResource, match="no-such-file is missing"):
        resources.data_path("units", "no-such-file")


def test_packages_are_found_without_importing_them() -> None:
    assert resources.package_dir("imagebuild") == REPO / "imagebuild"
    assert resources.package_dir("no_such_flotilla_package") is None
    assert resources.code_root() == REPO


def test_the_image_gets_every_package_a_machine_runs() -> None:
    sources = machine_sources()
    assert set(sources) == {"fleetd", "flotilla", "provision", "podunits"}
    assert all(path == REPO / name for name, path in sources.items())


@pytest.mark.parametrize("tree", COPIED_TREES)
def test_copied_trees_hold_no_symlinks(tree: str) -> None:
    links = [str(p.relative_to(REPO)) for p in (REPO / tree).rglob("*") if p.is_symlink()]
    assert links == []


@pytest.mark.parametrize(
    ("environ", "euid", "expected"),
    [
        ({"FLOTILLA_CACHE": "/srv/cache"}, 0, Path("/srv/cache")),
        ({"FLOTILLA_CACHE": "/srv/cache"}, 1000, Path("/srv/cache")),
        ({}, 0, SYSTEM_CACHE),
        (
            {"XDG_CACHE_HOME": "/home/u/.xdg", "HOME": "/home/u"},
            1000,
            Path("/home/u/.xdg/flotilla"),
        ),
        ({"HOME": "/home/u"}, 1000, Path("/home/u/.cache/flotilla")),
        ({"FLOTILLA_CACHE": "", "HOME": "/home/u"}, 1000, Path("/home/u/.cache/flotilla")),
    ],
)
def test_the_cache_is_flotilla_cache_else_var_cache_for_root_else_xdg(
    environ: dict[str, str], euid: int, expected: Path
) -> None:
    assert default_cache_root(environ, euid) == expected


def test_the_recipe_links_the_default_target(tmp_path: Path) -> None:
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system/default.target").write_text("a file, as a wheel would make")
    copy_image_files(tmp_path)
    link = tmp_path / "etc/systemd/system/default.target"
    assert link.is_symlink()
    assert str(link.readlink()) == "/usr/lib/systemd/system/multi-user.target"
