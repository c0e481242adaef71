"""Host keys as fleetctl checks them with --strict-host-key-checking (the default), before any
real SSH connection: a host whose key is remembered goes ahead, an unknown host is asked about
on stdin (whether or not it is a terminal, as fleet asks) and remembered in fleetctl's
known-hosts file when the answer is yes, and a changed key is refused as `host key mismatch`.

OpenSSH asks only on a terminal, so the key is fetched first with ssh-keyscan, which only does
the key exchange (no authentication, no session: nothing is sent to an unconfirmed host). The
connection that follows runs with OpenSSH's StrictHostKeyChecking=yes against the same files,
so a key that changed in between is still refused.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

# The files OpenSSH reads besides the user's (its GlobalKnownHostsFile default).
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
QUESTION = "Are you sure you want to continue connecting (yes/no)? "


class HostKeyError(Exception):
    """The host's key cannot be trusted (or read); the message says which host and why."""


@dataclass(frozen=True)
class HostKey:
    type: str  # as OpenSSH names it: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa
    blob: str  # base64

    def fingerprint(self) -> str:
        """OpenSSH's SHA256 fingerprint of the key."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def label(self) -> str:
        """ED25519, ECDSA, RSA: the name OpenSSH shows for the key's type."""
        name = self.type.removeprefix("ssh-").split("-")[0]
        return {"dss": "DSA"}.get(name, name.upper())


@dataclass(frozen=True)
class KnownKey:
    key: HostKey
    file: str


class Verdict(Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"


def judge(offered: Collection[HostKey], known: Collection[HostKey]) -> Verdict:
    """A host whose key of some type differs from every key remembered for it of that type has
    changed (even if a key of another type still matches: no host key may be swapped unseen);
    otherwise it is known when one of its keys is remembered, unknown when none is."""
    for key in offered:
        same_type = {k.blob for k in known if k.type == key.type}
        if same_type and key.blob not in same_type:
            return Verdict.CHANGED
    return Verdict.KNOWN if set(offered) & set(known) else Verdict.UNKNOWN


def host_name(host: str, port: int) -> str:
    """The name a known-hosts file gives a host (OpenSSH's `[host]:port` off port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def parse_key_lines(text: str) -> list[HostKey]:
    """The keys in known-hosts lines (ssh-keyscan's output, ssh-keygen -F's); comments, blank
    lines and marked lines (@cert-authority, @revoked) are left out."""
    keys = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith(("#", "@")):
            keys.append(HostKey(fields[1], fields[2]))
    return keys


def scan(host: str, port: int, timeout: float) -> list[HostKey]:
    """The keys the host's sshd offers (key exchange only)."""
    argv = ["ssh-keyscan", "-T", str(max(1, round(timeout))), "-p", str(port), "--", host]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout * 4 + 5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HostKeyError(
            f"cannot read the host key of {host_name(host, port)}: {error}"
        ) from error
    keys = parse_key_lines(result.stdout)
    if not keys:
        raise HostKeyError(
            f"cannot read the host key of {host_name(host, port)}: no SSH server answered"
        )
    return keys


def remembered(name: str, files: Sequence[str]) -> list[KnownKey]:
    """Every key the known-hosts files hold for that name (hashed names and patterns too:
    ssh-keygen -F matches them as ssh does)."""
    found = []
    for file in files:
        if not Path(file).is_file():
            continue
        result = subprocess.run(
            ["ssh-keygen", "-F", name, "-f", file], capture_output=True, text=True, check=False
        )
        found += [KnownKey(key, file) for key in parse_key_lines(result.stdout)]
    return found


def ask_on_stdin(question: str) -> bool:
    """Ask on stderr and read the answer from stdin until it is yes or no; the end of stdin
    is a no."""
    while True:
        print(question, end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            print(file=sys.stderr)
            return False
        if answer.strip().lower() in ("yes", "no"):
            return answer.strip().lower() == "yes"
        question = "Please type 'yes' or 'no': "


def confirm_host(
    host: str,
    port: int,
    known_hosts_file: str,
    timeout: float,
    ask: Callable[[str], bool] = ask_on_stdin,
) -> None:
    """Return when the host may be connected to with strict checking; HostKeyError when not."""
    name = host_name(host, port)
    user_file = Path(known_hosts_file).expanduser()
    offered = scan(host, port, timeout)
    known = remembered(name, [str(user_file), *GLOBAL_KNOWN_HOSTS])
    verdict = judge(offered, [k.key for k in known])
    if verdict is Verdict.KNOWN:
        return
    if verdict is Verdict.CHANGED:
        warn_changed(name, offered, known)
        raise HostKeyError(f"host key mismatch for {name}")
    lines = [f"The authenticity of host '{name}' can't be established."]
    lines += [f"{key.label()} key fingerprint is {key.fingerprint()}." for key in offered]
    print("\n".join(lines), file=sys.stderr)
    if not ask(QUESTION):
        raise HostKeyError(f"host key verification failed for {name}: its key was not accepted")
    remember(user_file, name, offered)
    types = ",".join(key.label() for key in offered)
    print(
        f"Warning: Permanently added '{name}' ({types}) to the list of known hosts.",
        file=sys.stderr,
    )


def warn_changed(name: str, offered: Sequence[HostKey], known: Sequence[KnownKey]) -> None:
    offered_types = {key.type for key in offered}
    files = sorted({k.file for k in known if k.key.type in offered_types})
    now = ", ".join(f"{key.label()} {key.fingerprint()}" for key in offered)
    print(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        f"{name} now offers a key other than the one remembered for it ({now}).\n"
        "Someone may be intercepting the connection, or the host got a new key: if you know\n"
        f"it did, remove its old key from {' and '.join(files)} and connect again.",
        file=sys.stderr,
    )


def remember(file: Path, name: str, keys: Sequence[HostKey]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file.open("a") as known_hosts:
        known_hosts.writelines(f"{name} {key.type} {key.blob}\n" for key in keys)
