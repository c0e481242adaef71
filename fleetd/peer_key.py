"""The cluster's key for the fencing probe (peers.py): from etcd, cached in /run/fleet.

The cache lets a fleetd restarted while its machine is cut off from etcd still take part in
fencing. Without either, a random key makes this machine deaf to its peers and mute to them:
it then fences as a machine that nobody answers would, which is the safe side.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from .registry import Registry, RegistryError

log = logging.getLogger(__name__)


async def obtain_peer_key(registry: Registry, cache: Path) -> bytes:
    try:
        key = await registry.peer_key()
    except RegistryError as error:
        try:
            return cache.read_bytes()
        except OSError:
            log.warning(
                "no peer key (%s); the fencing probe cannot hear peers until restart", error
            )
            return secrets.token_hex(32).encode()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key)
    except OSError as error:
        log.warning("cannot keep the peer key in %s: %s", cache, error)
    return key
