"""What the cloud-config dialect accepts: the keys of each mapping, the names and values each
field may take, the write_files encodings, and the etcd and fleet settings. (pure)

`provision/cloudconfig.py` walks a document against these tables.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import posixpath
import re
import zlib

from fleetd.config import SETTINGS_BY_NAME

HEADER = "#cloud-config"

# The keys each mapping accepts (after `-` -> `_`).
USER_FIELDS = "name passwd groups ssh_authorized_keys homedir shell system primary_group gecos"
USER_KEYS = frozenset(f"{USER_FIELDS} no_create_home".split())
FILE_KEYS = frozenset({"path", "content", "encoding", "permissions", "owner"})
UNIT_KEYS = frozenset({"name", "content", "enable", "runtime", "mask", "command", "drop_ins"})
DROP_IN_KEYS = frozenset({"name", "content"})
TOP_KEYS = frozenset(
    {"hostname", "users", "ssh_authorized_keys", "write_files", "manage_etc_hosts", "coreos"}
)
COREOS_KEYS = frozenset({"units", "etcd2", "fleet", "update", "locksmith"})
# Why a key a user may reasonably write is not applied (shown with the warning).
NOT_HERE = {
    "units": "did you mean coreos.units?",
    "etcd2": "did you mean coreos.etcd2?",
    "fleet": "did you mean coreos.fleet?",
    "write_files": "write_files goes at the top level, not under coreos",
    "etcd": "etcd 0.4's settings are not supported; use coreos.etcd2",
    "flannel": "Flotilla ships no flannel",
    "oem": "the OEM partition carries oem-release on Flotilla",
    "runcmd": "a cloud-init key: run commands from a unit in coreos.units",
    "bootcmd": "a cloud-init key: run commands from a unit in coreos.units",
    "packages": "a cloud-init key: Flotilla has no package manager",
    "no_user_group": "not supported by flotilla-cloudinit",
    "no_log_init": "not supported by flotilla-cloudinit",
    "coreos_ssh_import_github": "deprecated in coreos-cloudinit and not supported",
    "coreos_ssh_import_github_users": "deprecated in coreos-cloudinit and not supported",
    "coreos_ssh_import_url": "deprecated in coreos-cloudinit and not supported",
}

COMMANDS = "start stop restart reload try-restart reload-or-restart reload-or-try-restart"
UNIT_COMMANDS = frozenset(COMMANDS.split())
UNIT_TYPES = "service socket timer path mount automount swap target slice device scope"
NETWORK_UNIT_TYPES = ("network", "netdev", "link")
UNIT_SUFFIXES = "|".join([*UNIT_TYPES.split(), *NETWORK_UNIT_TYPES])
UNIT_NAME = re.compile(rf"[A-Za-z0-9:_\\-][A-Za-z0-9:_.\\@-]*\.({UNIT_SUFFIXES})\Z")
DROP_IN_NAME = re.compile(r"[A-Za-z0-9:_@-][A-Za-z0-9:_.@-]*\.conf\Z")
HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\Z")
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\Z")
OWNER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:([A-Za-z0-9_][A-Za-z0-9_.-]*)?)?\Z")
PERMISSIONS = re.compile(r"0?[0-7]{3,4}\Z")
ENCODINGS = {
    "": (),
    "b64": ("base64",),
    "base64": ("base64",),
    "gz": ("gzip",),
    "gzip": ("gzip",),
    **{f"{gz}+{b64}": ("base64", "gzip") for gz in ("gz", "gzip") for b64 in ("b64", "base64")},
}
# etcd 3.4's flags (`etcd --help` of Debian 12's etcd-server), as ETCD_* variables name them.
ETCD_FLAG_NAMES = """advertise_client_urls auth_token auth_token_ttl auto_compaction_mode
    auto_compaction_retention auto_tls backend_batch_interval backend_batch_limit bcrypt_cost
    cert_file cipher_suites client_cert_allowed_hostname client_cert_auth client_crl_file cors
    data_dir debug discovery discovery_fallback discovery_proxy discovery_srv discovery_srv_name
    election_timeout enable_pprof enable_v2 experimental_backend_bbolt_freelist_type
    experimental_compaction_batch_limit experimental_corrupt_check_time
    experimental_enable_lease_checkpoint experimental_enable_v2v3
    experimental_initial_corrupt_check experimental_peer_skip_client_san_verification
    experimental_warning_apply_duration experimental_watch_progress_notify_interval
    force_new_cluster grpc_keepalive_interval grpc_keepalive_min_time grpc_keepalive_timeout
    heartbeat_interval host_whitelist initial_advertise_peer_urls initial_cluster
    initial_cluster_state initial_cluster_token initial_election_tick_advance key_file
    listen_client_urls listen_metrics_urls listen_peer_urls log_level log_outputs
    log_package_levels logger max_concurrent_streams max_request_bytes max_snapshots max_txn_ops
    max_wals metrics name peer_auto_tls peer_cert_allowed_cn peer_cert_allowed_hostname
    peer_cert_file peer_client_cert_auth peer_crl_file peer_key_file peer_trusted_ca_file
    pre_vote proxy proxy_dial_timeout proxy_failure_wait proxy_read_timeout
    proxy_refresh_interval proxy_write_timeout quota_backend_bytes snapshot_count
    strict_reconfig_check trusted_ca_file wal_dir"""
ETCD_FLAGS = frozenset(ETCD_FLAG_NAMES.split())
ETCD_PROXY_VALUES = ("on", "off", "readonly")

# coreos.update and coreos.locksmith become /etc/flotilla/update.conf (flotilla/update/config.py):
# the update agent reads it, and its etcd-lock strategy is locksmith's role.
UPDATE_CONF = "/etc/flotilla/update.conf"
UPDATE_CONF_KEYS = {
    ("update", "reboot_strategy"): "REBOOT_STRATEGY",
    ("update", "server"): "SERVER",
    ("locksmith", "endpoint"): "ETCD_ENDPOINTS",
    ("locksmith", "window_start"): "REBOOT_WINDOW_START",
    ("locksmith", "window_length"): "REBOOT_WINDOW_LENGTH",
}
WINDOW_KEYS = ("REBOOT_WINDOW_START", "REBOOT_WINDOW_LENGTH")
_LOCK_TLS = "the reboot lock logs in to etcd with fleet's settings (coreos.fleet)"
IGNORED_UPDATE_KEYS = {
    ("update", "group"): "Flotilla has no release channels: updates come from the server",
    ("locksmith", "group"): "a cluster has one reboot lock",
    **{("locksmith", key): _LOCK_TLS for key in (
        "etcd_cafile", "etcd_certfile", "etcd_keyfile", "etcd_username", "etcd_password")},
}  # fmt: skip

# coreos.fleet takes fleetd's own settings, so a value fleetd would refuse at startup is refused
# when the config is checked.
FLEET_SETTINGS = SETTINGS_BY_NAME


def decode_content(content: str, encoding: str) -> bytes:
    """write_files content as bytes; ValueError when it is not in its `encoding`."""
    data = content.encode()
    for step in ENCODINGS[encoding]:
        if step == "base64":
            try:
                data = base64.b64decode(b"".join(data.split()), validate=True)
            except binascii.Error as error:
                raise ValueError(str(error)) from None
        else:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as error:
                raise ValueError(str(error)) from None
    return data


def is_under_usr(path: str) -> bool:
    normal = "/" + posixpath.normpath(path).lstrip("/")
    return normal == "/usr" or normal.startswith("/usr/")
