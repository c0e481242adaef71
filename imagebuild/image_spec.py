"""The image manifest (image.yaml): read, type-checked and rendered before any heavy work.

Every mistake is reported with the manifest's file and line: an unknown key, a wrong type, a
size that does not parse, partitions that do not fit, a template that does not render.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import jinja2

from flotilla.manifest import Location, Manifest, load_manifest
from flotilla.update.slots import slot_arguments_in

from .layout import PARTITION_TYPES, DiskLayout, PartitionSpec, plan_disk

DEFAULT_IMAGE_SPEC = Path(__file__).with_name("image.yaml")
SIZE_UNITS = {"": 1, "K": 1024, "KiB": 1024, "M": 1024**2, "MiB": 1024**2, "G": 1024**3}
SIZE_UNITS |= {"GiB": 1024**3, "T": 1024**4, "TiB": 1024**4}
NAME = re.compile(r"^[a-z][a-z0-9-]*\Z")  # \Z: `$` would accept a trailing newline


@dataclass(frozen=True)
class UserSpec:
    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerImageSpec:
    """A container image baked into the read-only store under /usr (no registry is reachable):
    its root is one Debian package's files, as a single layer."""

    name: str  # fully qualified, as podman lists it: localhost/busybox:latest
    package: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class InitramfsSpec:
    dracut_modules: tuple[str, ...]
    drivers: tuple[str, ...]
    compress: str = "zstd"


@dataclass(frozen=True)
class ImageSpec:
    path: Path
    name: str
    version: str
    rootfs: Path
    packages: tuple[str, ...]
    purge_packages: tuple[str, ...]
    remove_paths: tuple[str, ...]
    package_manager_paths: tuple[str, ...]
    kernel_modules: tuple[str, ...]
    initramfs: InitramfsSpec
    users: tuple[UserSpec, ...]
    enable_units: tuple[str, ...]
    disable_units: tuple[str, ...]
    container_images: tuple[ContainerImageSpec, ...]
    cmdline: str
    disk_guid: str
    layout: DiskLayout
    package_lines: dict[str, int]
    module_lines: dict[str, int]

    def tree_inputs(self) -> dict[str, object]:
        """What shapes the image tree (and so its cache key); the disk layout does not."""
        return {
            "name": self.name,
            "version": self.version,
            "packages": self.packages,
            "purge_packages": self.purge_packages,
            "remove_paths": self.remove_paths,
            "package_manager_paths": self.package_manager_paths,
            "kernel_modules": self.kernel_modules,
            "initramfs": [*self.initramfs.dracut_modules, "|", *self.initramfs.drivers],
            "compress": self.initramfs.compress,
            "users": [(u.name, u.groups) for u in self.users],
            "enable_units": self.enable_units,
            "disable_units": self.disable_units,
            "container_images": [(i.name, i.package, i.command) for i in self.container_images],
        }


TOP_LEVEL = {
    "name": str,
    "version": str,
    "rootfs": str,
    "packages": list,
    "purge_packages": list,
    "remove_paths": list,
    "package_manager_paths": list,
    "kernel_modules": list,
    "initramfs": dict,
    "users": list,
    "enable_units": list,
    "disable_units": list,
    "container_images": list,
    "cmdline": str,
    "disk_guid": str,
    "disk_size": (str, int),
    "partitions": list,
}
OPTIONAL = {
    "purge_packages",
    "remove_paths",
    "package_manager_paths",
    "users",
    "enable_units",
    "disable_units",
    "container_images",
    "disk_size",
}
CONTAINER_IMAGE_NAME = re.compile(r"^localhost/[a-z0-9][a-z0-9._-]*:[A-Za-z0-9._-]+\Z")


def load_image_spec(path: Path = DEFAULT_IMAGE_SPEC) -> ImageSpec:
    manifest = load_manifest(path)
    data = manifest.data
    _check_keys(manifest, (), data, TOP_LEVEL, OPTIONAL)
    for key, kind in TOP_LEVEL.items():
        if key in data:
            _check_type(manifest, (key,), data[key], kind)
    name = data["name"]
    if not NAME.match(name):
        raise manifest.error(("name",), f"{name!r} must be lower-case letters, digits and '-'")
    layout = _read_layout(manifest)
    spec = ImageSpec(
        path=path,
        name=name,
        version=data["version"],
        rootfs=path.parent / data["rootfs"],
        packages=_strings(manifest, ("packages",)),
        purge_packages=_strings(manifest, ("purge_packages",)),
        remove_paths=_strings(manifest, ("remove_paths",)),
        package_manager_paths=_strings(manifest, ("package_manager_paths",)),
        kernel_modules=_strings(manifest, ("kernel_modules",)),
        initramfs=_read_initramfs(manifest),
        users=_read_users(manifest),
        enable_units=_strings(manifest, ("enable_units",)),
        disable_units=_strings(manifest, ("disable_units",)),
        container_images=_read_container_images(manifest),
        cmdline="",
        disk_guid=_uuid(manifest, ("disk_guid",)),
        layout=layout,
        package_lines=_item_lines(manifest, "packages"),
        module_lines=_item_lines(manifest, "kernel_modules"),
    )
    if not any(package.startswith("linux-image-") for package in spec.packages):
        raise manifest.error(("packages",), "no kernel: add a kernel package (linux-image-amd64)")
    if not spec.rootfs.is_file():
        raise manifest.error(("rootfs",), f"no rootfs manifest at {spec.rootfs}")
    return _with_cmdline(manifest, spec)


def _read_container_images(manifest: Manifest) -> tuple[ContainerImageSpec, ...]:
    images = []
    for index, raw in enumerate(manifest.data.get("container_images") or []):
        where = ("container_images", index)
        _check_type(manifest, where, raw, dict)
        _check_keys(manifest, where, raw, {"name": str, "package": str, "command": list}, set())
        for key, kind in (("name", str), ("package", str), ("command", list)):
            _check_type(manifest, (*where, key), raw[key], kind)
        if not CONTAINER_IMAGE_NAME.match(raw["name"]):
            raise manifest.error(
                (*where, "name"), f"{raw['name']!r}: use localhost/NAME:TAG (nothing is pulled)"
            )
        command = _strings(manifest, (*where, "command"))
        images.append(ContainerImageSpec(raw["name"], raw["package"], command))
    return tuple(images)


def _item_lines(manifest: Manifest, key: str) -> dict[str, int]:
    return {item: manifest.line((key, i)) for i, item in enumerate(manifest.data[key])}


def template_values(spec: ImageSpec, build_id: str = "") -> dict[str, object]:
    return {
        "name": spec.name,
        "version": spec.version,
        "build_id": build_id,
        "partitions": {p.label: p for p in spec.layout.partitions},
    }


def _with_cmdline(manifest: Manifest, spec: ImageSpec) -> ImageSpec:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        text = environment.from_string(manifest.data["cmdline"]).render(template_values(spec))
    except Exception as error:
        # The template is the manifest's own code: whatever it raises (a TemplateError, or
        # ZeroDivisionError from {{ 1/0 }}, TypeError from {{ name + 1 }}) is its mistake.
        raise manifest.error(("cmdline",), f"template: {error}") from error
    owned = slot_arguments_in(text)
    if owned:
        raise manifest.error(
            ("cmdline",),
            f"{owned[0]}: imagebuild writes each slot's /usr arguments (mount.usr=, usrhash=,"
            " systemd.verity_usr_*=) itself; remove it",
        )
    return ImageSpec(**{**spec.__dict__, "cmdline": " ".join(text.split())})


def _read_layout(manifest: Manifest) -> DiskLayout:
    partitions = []
    for index, raw in enumerate(manifest.data["partitions"]):
        where = ("partitions", index)
        _check_type(manifest, where, raw, dict)
        _check_keys(manifest, where, raw, PARTITION_KEYS, {"uuid"})
        kind = _string(manifest, (*where, "type"), raw["type"])
        if kind not in PARTITION_TYPES:
            known = ", ".join(PARTITION_TYPES)
            raise manifest.error((*where, "type"), f"unknown partition type {kind!r} ({known})")
        partitions.append(
            PartitionSpec(
                label=_string(manifest, (*where, "label"), raw["label"]),
                kind=kind,
                size=parse_size(manifest, (*where, "size"), raw["size"]),
                uuid=_uuid(manifest, (*where, "uuid")) if "uuid" in raw else _stable_uuid(raw),
            )
        )
    disk_size = None
    if "disk_size" in manifest.data:
        disk_size = parse_size(manifest, ("disk_size",), manifest.data["disk_size"])
    try:
        return plan_disk(tuple(partitions), disk_size)
    except ValueError as error:
        raise manifest.error(("partitions",), str(error)) from error


PARTITION_KEYS = {"label": str, "type": str, "size": (str, int), "uuid": str}


def _stable_uuid(raw: dict[str, object]) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"flotilla-partition:{raw['label']}"))


def _read_initramfs(manifest: Manifest) -> InitramfsSpec:
    raw = manifest.data["initramfs"]
    kinds = {"dracut_modules": list, "drivers": list, "compress": str}
    _check_keys(manifest, ("initramfs",), raw, kinds, {"compress"})
    for key, kind in kinds.items():
        if key in raw:
            _check_type(manifest, ("initramfs", key), raw[key], kind)
    return InitramfsSpec(
        dracut_modules=_strings(manifest, ("initramfs", "dracut_modules")),
        drivers=_strings(manifest, ("initramfs", "drivers")),
        compress=raw.get("compress", "zstd"),
    )


def _read_users(manifest: Manifest) -> tuple[UserSpec, ...]:
    users = []
    for index, raw in enumerate(manifest.data.get("users", [])):
        where = ("users", index)
        _check_type(manifest, where, raw, dict)
        _check_keys(manifest, where, raw, {"name": str, "groups": list}, {"groups"})
        name = _string(manifest, (*where, "name"), raw["name"])
        if not NAME.match(name):
            raise manifest.error((*where, "name"), f"{name!r} is not a valid user name")
        users.append(UserSpec(name, _strings(manifest, (*where, "groups"))))
    return tuple(users)


def parse_size(manifest: Manifest, where: Location, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    # At most 30 digits: int() refuses more than 4300, and no disk is that large anyway.
    match = re.fullmatch(r"\s*([0-9]{1,30})\s*([A-Za-z]*)\s*", str(value))
    if not match or match[2] not in SIZE_UNITS or int(match[1]) == 0:
        raise manifest.error(where, f"{value!r} is not a size (like 512MiB or 2GiB)")
    return int(match[1]) * SIZE_UNITS[match[2]]


def _check_keys(
    manifest: Manifest,
    where: Location,
    raw: dict[str, object],
    known: dict[str, object],
    optional: set[str],
) -> None:
    for key in raw:
        if key not in known:
            raise manifest.error((*where, key), f"unknown key (known: {', '.join(known)})")
    for key in known:
        if key not in raw and key not in optional:
            raise manifest.error(where, f"missing key {key!r}")


def _check_type(manifest: Manifest, where: Location, value: object, kind: object) -> None:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        wanted = " or ".join(TYPE_NAMES[k] for k in kinds)
        raise manifest.error(where, f"must be {wanted}, not {type(value).__name__}")


TYPE_NAMES = {str: "a string", int: "a number", list: "a list", dict: "a mapping"}


def _string(manifest: Manifest, where: Location, value: object) -> str:
    _check_type(manifest, where, value, str)
    return value  # type: ignore[return-value]


def _strings(manifest: Manifest, where: Location) -> tuple[str, ...]:
    value: object = manifest.data
    for part in where:
        if isinstance(value, dict):
            value = value.get(part, [])
        elif isinstance(value, list) and isinstance(part, int):
            value = value[part]
    _check_type(manifest, where, value, list)
    for index, item in enumerate(value):  # type: ignore[arg-type]
        _check_type(manifest, (*where, index), item, str)
    return tuple(value)  # type: ignore[arg-type]


def _uuid(manifest: Manifest, where: Location) -> str:
    value: object = manifest.data
    for part in where:
        value = value[part]  # type: ignore[index]
    try:
        return str(uuid.UUID(_string(manifest, where, value)))
    except ValueError as error:
        raise manifest.error(where, f"{value!r} is not a UUID") from error
