"""Choosing the kernel modules an image keeps (pure): the wanted ones and everything they need."""

from __future__ import annotations

from fnmatch import fnmatchcase


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """modules.dep lines (`kernel/a.ko: kernel/b.ko kernel/c.ko`) as module -> dependencies."""
    dependencies = {}
    for line in text.splitlines():
        module, _, needs = line.partition(":")
        module = module.strip()
        if module:
            dependencies[module] = tuple(needs.split())
    return dependencies


def modules_to_keep(
    dependencies: dict[str, tuple[str, ...]], patterns: tuple[str, ...]
) -> set[str]:
    """Modules under kernel/ matching a pattern (a shell glob; `*` spans directories), plus
    their dependencies, transitively."""
    wanted = [
        module
        for module in dependencies
        if any(fnmatchcase(module.removeprefix("kernel/"), pattern) for pattern in patterns)
    ]
    keep: set[str] = set()
    while wanted:
        module = wanted.pop()
        if module not in keep:
            keep.add(module)
            wanted.extend(dependencies.get(module, ()))
    return keep


def unmatched_patterns(
    dependencies: dict[str, tuple[str, ...]], patterns: tuple[str, ...]
) -> list[str]:
    """Patterns that match no module: most likely a typo in the manifest."""
    names = [module.removeprefix("kernel/") for module in dependencies]
    return [p for p in patterns if not any(fnmatchcase(name, p) for name in names)]
