"""Running a fleetctl command: the driver the global options chose (API or etcd, maybe through
an SSH tunnel), and turning its errors into one line for the user."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

# fleetctl's start-up time is mostly imports, and cli.py imports this module for every command
# (`fleetctl version` included): what only running a command against a cluster needs (asyncio,
# a driver, the unit checks, SSH) is imported where it is used.
if TYPE_CHECKING:
    import ssl

    from .driver import Driver

T = TypeVar("T")
PASSWORD_VARIABLE = "FLEETCTL_ETCD_PASSWORD"  # never a flag: argv is readable by every user
POLL_SECONDS = 0.25
DEFAULT_ENDPOINTS = {"API": "unix:///var/run/fleet.sock", "etcd": "http://127.0.0.1:2379"}
ROUND_SECONDS = 2.0


class Failure(Exception):
    """A command failed; the message is what fleetctl prints, exit status 1."""


def session_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """What running a command needs from the root's parsed flags."""
    from .remote import SshOptions  # here: most of remote's imports serve ssh and tunnels

    driver = params["driver"]
    if not params["experimental_api"]:  # fleet: the old switch to etcd wins over --driver
        driver = "etcd"
    ssh = SshOptions(
        params["ssh_username"],
        22,
        params["strict_host_key_checking"],
        params["known_hosts_file"],
        params["ssh_timeout"],
    )
    return {
        "endpoint": params["endpoint"],
        "driver": driver,
        "timeout": params["request_timeout"],
        "prefix": params["etcd_key_prefix"],
        "etcd_username": params["etcd_username"],
        "etcd_password_file": params["etcd_password_file"],
        "ssh": ssh,
        "tunnel": params["tunnel"],
        "tls": (
            params["ca_file"] or params["etcd_cafile"],
            params["cert_file"] or params["etcd_certfile"],
            params["key_file"] or params["etcd_keyfile"],
        ),
    }


def root_options(ctx: click.Context) -> dict[str, Any]:
    """The session options; made from the root's flags when its callback never ran (shell
    completion parses the command line without running it)."""
    root = ctx.find_root()
    if root.obj is None:
        root.obj = session_options(root.params)
    return root.obj  # type: ignore[no-any-return]


def run(ctx: click.Context, action: Callable[[Driver], Awaitable[T]]) -> T:
    """Run `action` with the driver the global options chose; its errors become one line."""
    return run_options(root_options(ctx), action)


def run_options(options: dict[str, Any], action: Callable[[Driver], Awaitable[T]]) -> T:
    endpoint = options["endpoint"] or DEFAULT_ENDPOINTS[options["driver"]]
    if options["tunnel"]:
        from .remote import TunnelError, tunnel

        # One SSH forward reaches one address: through a tunnel, the first etcd member only.
        endpoint = endpoint.split(",")[0]
        try:
            with tunnel(options["tunnel"], endpoint, options["ssh"]) as local:
                return run_with(options, Reach(local, endpoint, options["tunnel"]), action)
        except TunnelError as error:
            raise Failure(f"{error} (tunnel via {options['tunnel']})") from error
    return run_with(options, Reach(endpoint, endpoint), action)


@dataclass(frozen=True)
class Reach:
    """Where the driver connects (`local`: a tunnel's end on this host), and the endpoint and
    tunnel host the user gave, which every error names instead."""

    local: str
    endpoint: str
    tunnel: str = ""

    def shown(self) -> str:
        return f"{self.endpoint} (tunnel via {self.tunnel})" if self.tunnel else self.endpoint

    def in_user_terms(self, message: str) -> str:
        """A client library's message with the tunnel's local end put back as the user's
        endpoint (the local socket or port means nothing to the user)."""
        if self.local == self.endpoint:
            return message
        local, given = urlsplit(self.local), urlsplit(self.endpoint)
        message = message.replace(self.local, self.endpoint)
        if local.scheme == "unix":
            return message.replace(local.path, given.path)
        return message.replace(local.netloc, given.netloc)


def run_with(options: dict[str, Any], reach: Reach, action: Callable[[Driver], Awaitable[T]]) -> T:
    from ..client import ClientError

    try:
        if options["driver"] == "etcd":
            return run_on_etcd(options, reach, action)
        return run_on_api(options, reach, action)
    except ClientError as error:
        raise Failure(reach.in_user_terms(str(error))) from error
    except ValueError as error:  # a malformed endpoint
        raise Failure(reach.in_user_terms(str(error))) from error


# Each driver is imported only when it is used: aetcd with gRPC, and aiohttp, were most of a
# command's start-up time, and no command needs both.


def run_on_etcd(
    options: dict[str, Any], reach: Reach, action: Callable[[Driver], Awaitable[T]]
) -> T:
    import asyncio

    from ..etcdclient import TlsFiles
    from ..keys import Keys
    from ..registry import Registry, RegistryError
    from .etcd_driver import EtcdDriver

    async def with_driver() -> T:
        tls = TlsFiles(*options["tls"])  # --ca-file, --cert-file, --key-file: for etcd too
        username = options["etcd_username"]
        password = etcd_password(options["etcd_password_file"]) if username else ""
        registry = Registry.open(
            reach.local, Keys(options["prefix"]), options["timeout"], username, password, tls
        )
        async with registry as opened:
            return await action(EtcdDriver(opened))

    try:
        return asyncio.run(with_driver())
    except RegistryError as error:
        raise Failure(
            f"error talking to etcd at {reach.shown()} (is etcd up?): "
            + reach.in_user_terms(str(error))
        ) from error


def run_on_api(
    options: dict[str, Any], reach: Reach, action: Callable[[Driver], Awaitable[T]]
) -> T:
    import asyncio

    from .api_driver import ApiClient, ApiUnavailable

    async def with_driver() -> T:
        tls = tls_context(*options["tls"])
        async with ApiClient.open(reach.local, options["timeout"], tls) as api:
            return await action(api)

    try:
        return asyncio.run(with_driver())
    except ApiUnavailable as error:
        if isinstance(getattr(error.__cause__, "os_error", None), PermissionError):
            socket = urlsplit(reach.endpoint).path or reach.endpoint
            raise Failure(
                f"permission denied on {socket}: add yourself to the fleet group or use sudo"
            ) from error
        raise Failure(
            f"error talking to fleet at {reach.shown()} (is fleetd running?): "
            + reach.in_user_terms(str(error))
        ) from error


def etcd_password(path: str) -> str:
    """The password: $FLEETCTL_ETCD_PASSWORD, else the first line of --etcd-password-file."""
    if PASSWORD_VARIABLE in os.environ:
        return os.environ[PASSWORD_VARIABLE]
    if not path:
        raise Failure(
            f"--etcd-username needs a password: set {PASSWORD_VARIABLE} or --etcd-password-file"
        )
    try:
        with open(path) as file:
            return file.readline().rstrip("\r\n")
    except OSError as error:
        raise Failure(f"cannot read the etcd password file {path}: {error.strerror}") from error


def tls_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """TLS for an https:// API: our CA (else the system's) and our client certificate."""
    if not (ca_file or cert_file):
        return None
    import ssl  # only here: most commands never need TLS

    try:
        context = ssl.create_default_context(cafile=ca_file or None)
        if cert_file:
            context.load_cert_chain(cert_file, key_file or None)
    except (OSError, ssl.SSLError) as error:
        raise Failure(
            f"cannot use the TLS files (--ca-file, --cert-file, --key-file): {error}"
        ) from error
    return context
