"""Which container images the machines hold; a spec may only name one of them.

The OS image bakes a few images into a read-only store and the machines reach no registry. The
list comes from one of two files:

- on a machine, /usr/share/flotilla/container-images.txt: what this image's store holds, one
  name a line (written by imagebuild/tree.py `bake_container_images`);
- on a host (a checkout or an installed flotilla), imagebuild/image.yaml, key
  `container_images:` (items `- name: IMAGE`).

A file ending in .yaml or .yml is read for that key only (not checked as a whole manifest);
any other file as a plain list, one name a line, blank lines and `#` comments ignored.
"""

from __future__ import annotations

from pathlib import Path

from flotilla.manifest import Manifest, ManifestError, load_manifest
from flotilla.resources import package_dir

from .spec import normalize_image

IMAGES_KEY = "container_images"
# imagebuild/tree.py CONTAINER_IMAGE_LIST, as seen on a running machine.
MACHINE_IMAGE_LIST = Path("/usr/share/flotilla/container-images.txt")
YAML_SUFFIXES = (".yaml", ".yml")
IMAGE_SPEC_NAME = "image.yaml"


def default_images_file() -> Path:
    """This machine's own list if there is one, else imagebuild's image manifest (found without
    importing imagebuild, which machines do not carry: without either, the machine's list is
    named, and known_images says it cannot be read)."""
    imagebuild = package_dir("imagebuild")
    if MACHINE_IMAGE_LIST.is_file() or imagebuild is None:
        return MACHINE_IMAGE_LIST
    return imagebuild / IMAGE_SPEC_NAME


def known_images(path: Path) -> tuple[str, ...]:
    """The fully qualified image names listed in `path`, in file order.

    Raises ManifestError naming the file and line for a missing key or a bad name.
    """
    if path.suffix in YAML_SUFFIXES:
        return _from_manifest(load_manifest(path))
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ManifestError(f"{path}: cannot read the image list: {error}") from error
    names = []
    for number, line in enumerate(lines, start=1):
        name = line.partition("#")[0].strip()
        if name:
            try:
                names.append(normalize_image(name))
            except ValueError as error:
                raise ManifestError(f"{path}:{number}: {error}") from error
    return tuple(names)


def _from_manifest(manifest: Manifest) -> tuple[str, ...]:
    if IMAGES_KEY not in manifest.data:
        reason = f"no {IMAGES_KEY}: list, so no image can be checked"
        raise manifest.error((), f"{reason} (give --images-from or --no-image-check)")
    items = manifest.data[IMAGES_KEY] or []
    if not isinstance(items, list):
        raise manifest.error((IMAGES_KEY,), "must be a list of {name: IMAGE} mappings")
    return tuple(_image_name(manifest, index, item) for index, item in enumerate(items))


def _image_name(manifest: Manifest, index: int, item: object) -> str:
    where = (IMAGES_KEY, index, "name") if isinstance(item, dict) else (IMAGES_KEY, index)
    name = item.get("name") if isinstance(item, dict) else item
    if not isinstance(name, str):
        raise manifest.error(where, "an image needs a name (like localhost/busybox:latest)")
    try:
        return normalize_image(name)
    except ValueError as error:
        raise manifest.error(where, str(error)) from error
