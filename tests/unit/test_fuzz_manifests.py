"""Fuzz: any YAML given as an image or rootfs manifest loads or raises the manifest's own error,
which names the file (Hypothesis).

The inputs are YAML token soup, the shipped manifests with a few values replaced by anything
YAML can hold, and the shipped text with soup spliced into it (so that tags, anchors and odd
keys reach every check, not only the parser).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from flotilla.manifest import ManifestError, load_manifest
from imagebuild.image_spec import DEFAULT_IMAGE_SPEC, load_image_spec
from imagebuild.spec import DEFAULT_SPEC, SpecError, load_spec

from .fuzzing import fuzz, soup

SHIPPED_IMAGE = DEFAULT_IMAGE_SPEC.read_text()
SHIPPED_ROOTFS = DEFAULT_SPEC.read_text()
LOADERS: dict[str, tuple[Callable[[Path], object], type[Exception]]] = {
    "manifest": (load_manifest, ManifestError),
    "image": (load_image_spec, ManifestError),
    "rootfs": (load_spec, SpecError),
}

YAML_TOKENS = [": ", "- ", "\n", "\n  ", "[", "]", "{", "}", ", ", "? ", "#", "'", '"', "|\n"]
YAML_TOKENS += ["&a ", "*a", "<<: *a\n", "---\n", "...\n", "%YAML 1.1\n", "\t", "~", "null"]
YAML_TOKENS += ["!!int ", "!!float ", "!!set ", "!!map ", "!!str ", "!!binary ", "!!timestamp "]
YAML_TOKENS += ["!!omap ", "!!python/object:os.system ", "!custom ", "2024-13-45", "9" * 40]
YAML_TOKENS += ["name", "packages", "partitions", "size", "suite", "label: ROOT", "1", "0x1"]
YAML_TOKENS += ["{{ ", " }}", "{% if %}", "1/0", "cmdline: "]
yaml_soup = soup(YAML_TOKENS, max_size=25)

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(),
    st.text(st.characters(codec="utf-8"), max_size=8),
    st.sampled_from(["ROOT", "USR-A", "esp", "usr", "root", "512MiB", "0", "16MiB", "{{ 1/0 }}"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3)), inner, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def edited_data(draw: st.DrawFn, shipped: str) -> str:
    """The shipped manifest with one to three values replaced, removed or added."""
    data = copy.deepcopy(yaml.safe_load(shipped))
    for _ in range(draw(st.integers(1, 3))):
        parent: object = data
        key = draw(st.sampled_from(sorted(data, key=str)))
        while isinstance(parent[key], dict | list) and parent[key] and draw(st.booleans()):
            parent = parent[key]
            keys = sorted(parent, key=str) if isinstance(parent, dict) else range(len(parent))
            key = draw(st.sampled_from(list(keys)))
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "replace":
            parent[key] = draw(yaml_values)
        elif action == "remove" and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(yaml_values)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def spliced(draw: st.DrawFn, shipped: str) -> str:
    """The shipped text with soup put in at a line's start or end, or in its middle."""
    lines = shipped.splitlines(keepends=True)
    index = draw(st.integers(0, len(lines)))
    cut = draw(st.integers(0, len(lines[index]) if index < len(lines) else 0))
    line = lines[index] if index < len(lines) else ""
    lines[index : index + 1] = [line[:cut] + draw(yaml_soup) + line[cut:]]
    return "".join(lines)


def manifests(shipped: str) -> st.SearchStrategy[bytes]:
    texts = st.one_of(yaml_soup, edited_data(shipped), spliced(shipped))
    as_bytes = texts.map(lambda text: text.encode("utf-8", "surrogatepass"))
    return st.one_of(as_bytes, as_bytes.map(lambda data: data + b"\xff\n"))


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("fuzz-manifests")
    (path / "rootfs.yaml").write_text("")  # image.yaml's rootfs: only its existence is checked
    yield path


def check_loads_or_raises_its_error(directory: Path, kind: str, data: bytes) -> None:
    load, own_error = LOADERS[kind]
    path = directory / f"{kind}.yaml"
    path.write_bytes(data)
    try:
        load(path)
    except own_error as error:
        assert str(error).startswith(str(path))


@fuzz(150)
@given(
    st.sampled_from(sorted(LOADERS)), yaml_soup.map(lambda text: text.encode("utf-8", "replace"))
)
@example("manifest", b"a: !!python/object:os.system x\n")
@example("manifest", b"a: !!int x\n")
@example("manifest", b"a: &x [*x]\n")
@example("manifest", b"? [a]\n: b\n")
@example("manifest", b"!!set {a, b}\n")
@example("manifest", b"a: \xff\n")
@example("manifest", b"a: " + b"[" * 3000 + b"\n")
@example("manifest", b"a: " + b"9" * 5000 + b"\n")
@example("rootfs", b"1: x\na: y\n")
def test_any_yaml_loads_or_raises_the_manifests_error(
    directory: Path, kind: str, data: bytes
) -> None:
    check_loads_or_raises_its_error(directory, kind, data)


@fuzz(200)
@given(manifests(SHIPPED_IMAGE))
@example(SHIPPED_IMAGE.replace("rootfstype=ext4", "{{ 1/0 }}").encode())
@example(SHIPPED_IMAGE.replace("size: 256MiB", "size: " + "9" * 5000 + "MiB").encode())
def test_any_image_manifest_loads_or_raises_manifest_error(directory: Path, data: bytes) -> None:
    check_loads_or_raises_its_error(directory, "image", data)


@fuzz(200)
@given(manifests(SHIPPED_ROOTFS))
def test_any_rootfs_manifest_loads_or_raises_spec_error(directory: Path, data: bytes) -> None:
    check_loads_or_raises_its_error(directory, "rootfs", data)


@fuzz(20)
@given(st.integers(1, 60))
def test_aliases_do_not_multiply_the_work(directory: Path, levels: int) -> None:
    # Each level lists the one before twice: 2**levels paths to the first, one node each.
    lines = ["l0: &l0 [x, x]"]
    lines += [f"l{level}: &l{level} [*l{level - 1}, *l{level - 1}]" for level in range(1, levels)]
    path = directory / "aliases.yaml"
    path.write_text("\n".join(lines) + "\n")
    manifest = load_manifest(path)
    assert manifest.line((f"l{levels - 1}",)) == levels
    assert 1 <= manifest.line((f"l{levels - 1}", *[0] * levels)) <= levels
