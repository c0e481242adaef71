"""The aetcd client fleetd uses: every member of the etcd cluster, TLS, and an auth token that
survives an etcd restart. aetcd 1.0 opens one insecure channel to one host and keeps its first
token forever. Part of the etcd boundary with registry.py: nothing else imports aetcd.

How a request finds a live member. The channel's target lists the addresses of every member
(`ipv4:a:2379,b:2379,...`) under gRPC's pick_first policy: gRPC connects to the first address
that completes an HTTP/2 handshake, so a member that is dead or hung when the channel connects
costs a fraction of a second, and when the member in use dies (its connections reset) the
next request reconnects to another one by itself. A member that hangs (SIGSTOP, a frozen VM)
keeps its connection open and gRPC never gives up on it: client keepalive pings could notice,
but etcd refuses pings more often than every 5 s (it answers with GOAWAY "too_many_pings"),
which is too slow for a lease of a few seconds. So a request that fails with UNAVAILABLE or
DEADLINE_EXCEEDED on the current channel makes the client reconnect on a new channel that
starts at the next member; in-flight requests keep the old channel for one request timeout.
The cost of that rule is a needless reconnect (and restarted watches) when etcd is merely
slower than the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.watcher
import grpc
from aetcd import rpc

from . import metrics

log = logging.getLogger(__name__)
AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
INVALID_TOKEN = "invalid auth token"  # etcd forgot our token: it restarted, or the token expired
FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True)
class TlsFiles:
    """fleet's etcd_cafile, etcd_certfile and etcd_keyfile (any may be empty)."""

    ca: str = ""
    cert: str = ""
    key: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


@dataclass(frozen=True)
class Member:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Endpoints:
    """The etcd cluster's client URLs: its members, and whether they speak TLS (all or none)."""

    members: tuple[Member, ...]
    secure: bool


def parse_endpoints(urls: str | Iterable[str]) -> Endpoints:
    """etcd client URLs, as a list or as fleet's comma-separated string."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    parsed = [parse_endpoint(url.strip()) for url in items if url.strip()]
    if not parsed:
        raise ValueError("no etcd endpoint given")
    schemes = {secure for _, secure in parsed}
    if len(schemes) > 1:
        raise ValueError(
            f"etcd endpoints mix http:// and https:// ({', '.join(items)}): every member of "
            "one cluster is reached the same way; use one scheme for all of them"
        )
    members = tuple(dict.fromkeys(member for member, _ in parsed))  # once each, in order
    return Endpoints(members, schemes.pop())


def parse_endpoint(url: str) -> tuple[Member, bool]:
    """(member, TLS?) of one etcd client URL; a bare HOST:PORT means http://."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    try:
        port = parts.port or 2379
    except ValueError:
        port = 0
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise ValueError(f"unsupported etcd endpoint {url!r}: expected http(s)://HOST:PORT")
    return Member(parts.hostname, port), parts.scheme == "https"


def channel_target(addresses: list[tuple[str, int]]) -> str:
    """A gRPC target naming every address: `ipv4:` when all are IPv4, else `ipv6:` (IPv4
    addresses mapped), since one target cannot mix the two schemes."""
    ips = [(ipaddress.ip_address(ip), port) for ip, port in addresses]
    if all(ip.version == 4 for ip, _ in ips):
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in ips)
    mapped = [(ip if ip.version == 6 else f"::ffff:{ip}", port) for ip, port in ips]
    return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in mapped)


async def resolve(members: list[Member]) -> list[tuple[str, int]]:
    """Every address of every member, in member order (a name may stand for several)."""
    loop = asyncio.get_running_loop()
    found: list[tuple[str, int]] = []
    for member in members:
        try:
            infos = await loop.getaddrinfo(member.host, member.port, type=socket.SOCK_STREAM)
        except OSError as error:
            log.warning("cannot resolve etcd endpoint %s: %s", member, error)
            continue
        found += [(info[4][0], member.port) for info in infos if info[0] in FAMILIES]
    return list(dict.fromkeys(found))


class EtcdClient(aetcd.Client):
    """aetcd.Client over every member of `endpoints`, with TLS for https:// endpoints.

    With credentials, the auth token rides on each request (not in aetcd's cached metadata),
    so a token etcd no longer knows is replaced: a request refused with "invalid auth token"
    authenticates again and is sent once more. A refused stream (a watch, a lease keepalive)
    is not resent; its caller sees the error and its next attempt carries the new token.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        timeout: float,
        options: dict[str, object],
        username: str = "",
        password: str = "",
        tls: TlsFiles | None = None,
    ) -> None:
        first = endpoints.members[0]
        credentials = (username, password) if username else (None, None)
        super().__init__(first.host, first.port, *credentials, timeout, options)  # type: ignore[arg-type]
        self.endpoints = endpoints
        self._credentials = (tls or TlsFiles()).credentials() if endpoints.secure else None
        if username and not endpoints.secure:
            log.warning(
                "the etcd password of user %s goes to %s over plain http://, readable on the "
                "network; use https:// endpoints",
                username,
                ", ".join(map(str, endpoints.members)),
            )
        self._start = 0  # the member the next channel tries first: the first listed, at first
        self._generation = 0  # one per channel; failures on an older one are old news
        self._working = -1  # the last generation that answered a request
        self._token: str | None = None
        self._connect_lock = asyncio.Lock()
        self._token_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def members_in_order(self) -> list[Member]:
        """The members in the order the next channel tries them."""
        members = list(self.endpoints.members)
        return members[self._start :] + members[: self._start]

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        async with self._connect_lock:
            if self._connected.is_set():
                return
            await self._open_channel()

    async def _open_channel(self) -> None:
        if self.channel is not None:  # left by a connect that failed to authenticate
            self.spawn(close_later(self.channel, 0))
        order = self.members_in_order
        addresses = await resolve(order)
        if not addresses:
            raise aetcd.exceptions.ConnectionFailedError(
                f"no etcd endpoint resolves to an address: {', '.join(map(str, order))}"
            )
        target = channel_target(addresses)
        # One name stands for the channel: TLS checks whichever member answers against the
        # first member's name. A member whose certificate lacks it fails the handshake, and is
        # used when its turn to come first arrives (after a failure).
        options = {
            **self._options,
            "grpc.lb_policy_name": "pick_first",
            "grpc.default_authority": str(order[0]),
        }
        observer = CallObserver(self, self._generation)
        interceptors = [UnaryCalls(observer), StreamCalls(observer)]
        if self._credentials is not None:
            options["grpc.ssl_target_name_override"] = order[0].host
            self.channel = grpc.aio.secure_channel(
                target, self._credentials, options=list(options.items()), interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.insecure_channel(
                target, options=list(options.items()), interceptors=interceptors
            )
        self.auth_stub = rpc.AuthStub(self.channel)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = Watcher(rpc.WatchStub(self.channel), self._timeout, self.watch_refused)
        if self._username is not None:
            # A fresh token for a fresh channel: the member may have restarted and forgotten
            # the old one (simple tokens live in each member's memory).
            await self._authenticate(self.auth_stub)
        self._connected.set()

    async def refresh_token(self, stale: str | None) -> None:
        """Authenticate again, unless the `stale` token was already replaced (by another
        request, or by a new channel)."""
        async with self._token_lock:
            if self._token == stale and self.auth_stub is not None:
                log.info("etcd no longer accepts our auth token; authenticating again")
                await self._authenticate(self.auth_stub)

    async def _authenticate(self, stub: rpc.AuthStub) -> None:
        request = rpc.AuthenticateRequest(name=self._username, password=self._password)
        try:
            reply = await stub.Authenticate(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise translated(error) from error
        self._token = reply.token

    def watch_refused(self, watcher: Watcher) -> None:
        if self._username is not None:
            self.spawn(self._renew_watch_stream(watcher, self._token))

    async def _renew_watch_stream(self, watcher: Watcher, stale: str | None) -> None:
        with contextlib.suppress(aetcd.exceptions.ClientError):  # the next request says why
            await self.refresh_token(stale)
        await watcher.restart()

    def observe(self, generation: int, code: grpc.StatusCode, details: str) -> None:
        """The outcome of a request on the channel of `generation`."""
        if code == grpc.StatusCode.OK:
            self._working = generation
        elif code in FAILOVER_CODES and generation == self._generation:
            self.move_on(generation, f"{code.name}: {details}")

    def move_on(self, generation: int, reason: str) -> None:
        """Leave the current channel: the next request opens one that starts at the next
        member. Requests in flight on the old channel have a request timeout to finish."""
        level = logging.WARNING if generation == self._working else logging.DEBUG
        self._generation += 1
        self._start = (self._start + 1) % len(self.endpoints.members)
        log.log(
            level,
            "etcd request failed (%s); reconnecting, trying member %s first",
            reason,
            self.members_in_order[0],
        )
        self._connected.clear()
        if self.channel is not None:
            self.spawn(close_later(self.channel, self._timeout or 1.0))
        self._init_channel_attrs()

    async def prefix_version(self, prefix: bytes) -> tuple[int, int]:
        """(how many keys, the highest mod revision among them) under `prefix`: one Range
        that returns at most one key's name. It changes whenever a key is added, changed or
        deleted, so a reader can skip reading a large prefix that has not changed. (aetcd 1.0
        leaves out a Range's limit, hence the request built here.)"""
        await self.connect()
        request = rpc.RangeRequest(
            key=prefix,
            range_end=aetcd.utils.prefix_range_end(prefix),
            limit=1,
            sort_order=rpc.RangeRequest.DESCEND,
            sort_target=rpc.RangeRequest.MOD,
            keys_only=True,
        )
        try:
            reply = await self.kvstub.Range(request, timeout=self._timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as error:
            raise translated(error) from error
        return reply.count, (reply.kvs[0].mod_revision if reply.kvs else 0)

    def spawn(self, coroutine: object) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await super().close()


def translated(error: grpc.aio.AioRpcError) -> Exception:
    """aetcd's exception for a gRPC error (as its own methods raise them)."""
    try:
        aetcd.exceptions._handle_exception(error)
    except aetcd.exceptions.ClientError as client_error:
        return client_error
    return aetcd.exceptions.ClientError(str(error))


async def close_later(channel: grpc.aio.Channel, grace: float) -> None:
    try:
        await asyncio.sleep(grace)
    finally:
        await channel.close()


class Watcher(aetcd.watcher.Watcher):
    """aetcd's watcher, except that a watch etcd refuses fails. etcd refuses a watch (no
    permission, or a token it no longer knows) by answering created and canceled at once, which
    aetcd 1.0 takes for success: that watch would wait forever. The watches share one stream,
    which carries the token it was opened with, so after a refusal the client gets a new token
    and `restart` opens a new stream with it."""

    def __init__(
        self, watchstub: rpc.WatchStub, timeout: float | None, refused: Callable[[Watcher], None]
    ) -> None:
        super().__init__(watchstub, timeout=timeout)
        self.refused = refused

    async def _handle_response(self, response: rpc.WatchResponse) -> None:
        if not (response.created and response.canceled):
            await super()._handle_response(response)
            return
        async with self._lock:
            if self._new_callback is not None:
                reason = response.cancel_reason or "the watch was refused"
                self._new_callback.error = aetcd.exceptions.ClientError(reason)
                self._new_callback_ready.notify_all()
        self.refused(self)

    async def restart(self) -> None:
        """End the stream (its watches fail, and are made again on a new one)."""
        await self._terminate_stream(aetcd.exceptions.ClientError("watch stream restarted"))


class CallObserver:
    """What the interceptors of one channel share: its client and its generation."""

    def __init__(self, client: EtcdClient, generation: int) -> None:
        self.client = client
        self.generation = generation

    def authorized(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        token = self.client._token
        if token is None or method_name(details) == AUTHENTICATE:
            return details
        pairs = [(k, v) for k, v in (details.metadata or ()) if k != "token"]
        return details._replace(metadata=grpc.aio.Metadata(*pairs, ("token", token)))

    async def finished(self, call: grpc.aio.Call) -> tuple[grpc.StatusCode, str]:
        code, details = await call.code(), await call.details() or ""
        self.client.observe(self.generation, code, details)
        return code, details

    def needs_new_token(self, code: grpc.StatusCode, details: str) -> bool:
        return (
            code == grpc.StatusCode.UNAUTHENTICATED
            and INVALID_TOKEN in details
            and self.client._username is not None
        )


def method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else method


class UnaryCalls(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, observer: CallObserver) -> None:
        self.observer = observer

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        token = self.observer.client._token
        started = time.monotonic()
        call = await continuation(self.observer.authorized(details), request)
        code, text = await self.observer.finished(call)
        kind = metrics.operation_type(
            method_name(details), bool(getattr(request, "range_end", b""))
        )
        metrics.registry_operation(kind, time.monotonic() - started, code == grpc.StatusCode.OK)
        if self.observer.needs_new_token(code, text) and method_name(details) != AUTHENTICATE:
            # etcd checks the token before it acts on a request, so sending it again is safe.
            await self.observer.client.refresh_token(token)
            call = await continuation(self.observer.authorized(details), request)
            await self.observer.finished(call)
        return call


class StreamCalls(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, observer: CallObserver) -> None:
        self.observer = observer

    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        token = self.observer.client._token
        call = await continuation(self.observer.authorized(details), request_iterator)
        self.observer.client.spawn(self.watch_outcome(call, token))
        return call

    async def watch_outcome(self, call: grpc.aio.Call, token: str | None) -> None:
        code, text = await self.observer.finished(call)
        if self.observer.needs_new_token(code, text):
            with contextlib.suppress(aetcd.exceptions.ClientError):  # the next request says why
                await self.observer.client.refresh_token(token)
