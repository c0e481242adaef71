"""The aetcd client fleetd uses, plus TLS, which aetcd 1.0 does not offer (it only opens
insecure channels). Part of the etcd boundary with registry.py: nothing else imports aetcd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aetcd
import aetcd.watcher
import grpc
from aetcd import rpc


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


class TlsClient(aetcd.Client):
    """aetcd.Client over a TLS channel. `connect` follows aetcd 1.0's own, with a secure channel
    in place of the insecure one (pinned in rootfs.yaml; revisit when aetcd is upgraded)."""

    def __init__(self, *args: object, tls: TlsFiles, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._credentials = tls.credentials()

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        self.channel = rpc.secure_channel(target, self._credentials, options=self._options.items())
        if self._username is not None and self._password is not None:
            self.auth_stub = rpc.AuthStub(self.channel)
            request = rpc.AuthenticateRequest(name=self._username, password=self._password)
            reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
            self.metadata = (("token", reply.token),)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(
            rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()
