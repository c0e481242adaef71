"""Where Flotilla's own files are, the same way from a checkout and from an installed package.

Everything the tools read at run time lives inside a package: the unit files, templates and
examples under `flotilla/data/units`, the provisioning templates under `flotilla/data/cloud-config`,
and each tool's own files beside its modules (imagebuild's manifests and file trees, the lab's
machine-init.sh). A checkout and `pip install .` then have the same layout relative to the
packages, so no path here ever names the checkout.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

# The packages a machine runs: copied into the image, bind-mounted (with the rest of the code
# root) into lab machines. The data under flotilla/data travels with flotilla.
MACHINE_PACKAGES = ("fleetd", "flotilla", "provision", "podunits")


class MissingResource(RuntimeError):
    """A file Flotilla ships is not where the installed package should have it."""


def data_path(*parts: str) -> Path:
    """A file or directory under flotilla/data, e.g. data_path("units", "fleetd.service")."""
    root = importlib.resources.files("flotilla").joinpath("data")
    if not isinstance(root, Path):
        # A zip import (zipapp, egg) gives no real path, and the tools hand these to cp,
        # jinja2's loader and QEMU; say so instead of failing later with a stranger error.
        raise MissingResource(f"flotilla's data is not on a filesystem ({root}); install unzipped")
    path = root.joinpath(*parts)
    if not path.exists():
        raise MissingResource(f"{path} is missing: the flotilla package is incomplete")
    return path


def package_dir(package: str) -> Path | None:
    """The directory of one of our top-level packages, found without importing it (a machine
    carries only some of them); None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def code_root() -> Path:
    """The directory holding the project's packages: the checkout, or site-packages when
    installed. The lab bind-mounts it into its machines so they run the host's code."""
    found = package_dir("fleetd")
    if found is None:
        raise MissingResource("the fleetd package is not installed")
    return found.parent
