"""cloud-config: every key checked with the line it is on, and the plan that applies it.

The validator's cases are tables of (document, expected findings); the apply cases assert on the
actions `plan_apply` returns for a snapshot of a machine, so no machine is touched.
"""

from __future__ import annotations

import base64
import gzip
import os
import stat
from pathlib import Path

import pytest

from flotilla.update.config import parse_config
from provision.cloudconfig import CloudConfig, Finding, parse_cloud_config
from provision.cloudconfig_apply import execute, read_machine
from provision.cloudconfig_plan import Machine, MakeDirectory, PutFile, RunCommand, plan_apply

GZ_B64 = base64.b64encode(gzip.compress(b"compressed\n")).decode()
B64 = base64.b64encode(b"\x00binary\xff").decode()
CORE_MACHINE = Machine(
    "old-name", {"root": "/root", "core": "/home/core"}, frozenset({"root", "sudo", "core"})
)


def doc(body: str) -> str:
    return "#cloud-config\n" + body


def findings(text: str | bytes) -> list[tuple[int, str, str]]:
    return [(f.line, f.level, f.message) for f in parse_cloud_config(text).findings]


def parse(text: str) -> CloudConfig:
    parsed = parse_cloud_config(text)
    assert parsed.findings == (), parsed.findings
    return parsed.config


# -- the validator ----------------------------------------------------------------------------

# (document, [(line, level, a piece of the message)]): exactly these findings, in line order.
FINDINGS = {
    "empty user-data": ("", []),
    "only the header": ("#cloud-config\n", []),
    "header with trailing blanks": ("#cloud-config  \nhostname: a\n", []),
    "no header": ("hostname: a\n", [(1, "error", 'must begin with "#cloud-config"')]),
    "a script": ("#!/bin/sh\necho hi\n", [(1, "error", "scripts (#!) are not supported")]),
    "an Ignition config": ('{"ignition": {"version": "3.4.0"}}', [(1, "error", "Ignition")]),
    "YAML syntax": (doc("hostname: a\nusers: [\n"), [(4, "error", "invalid YAML")]),
    "not a mapping": (doc("- a\n"), [(2, "error", '"cloud-config" (want a mapping)')]),
    "unknown top-level key": (
        doc("hostname: a\n\nhostnme: b\n"),
        [(4, "warning", 'unrecognized key "hostnme" (did you mean "hostname"?)')],
    ),
    "units at the top level": (
        doc("units:\n  - name: a.service\n"),
        [(2, "warning", 'unrecognized key "units" (did you mean coreos.units?)')],
    ),
    "a cloud-init key": (doc("runcmd: [ls]\n"), [(2, "warning", "a cloud-init key")]),
    "unknown key in a user": (
        doc("users:\n  - name: alice\n    shel: /bin/sh\n"),
        [(4, "warning", 'unrecognized key "shel"')],
    ),
    "unknown key in a file": (
        doc("write_files:\n  - path: /etc/a\n    mode: '0600'\n"),
        [(4, "warning", 'unrecognized key "mode"')],
    ),
    "unsupported coreos key": (
        doc("coreos:\n  flannel:\n    interface: eth0\n"),
        [(3, "warning", 'unrecognized key "flannel" (Flotilla ships no flannel)')],
    ),
    "update strategy unknown": (
        doc("coreos:\n  update:\n    reboot_strategy: sometimes\n"),
        [(4, "error", "coreos.update.reboot_strategy: REBOOT_STRATEGY 'sometimes' is not one of")],
    ),
    "update server not a URL": (
        doc("coreos:\n  update:\n    server: updates.example\n"),
        [(4, "error", "SERVER must be an http:// or https:// URL")],
    ),
    "update group and locksmith TLS ignored": (
        doc("coreos:\n  update:\n    group: stable\n  locksmith:\n    etcd_cafile: /ca\n"),
        [(4, "warning", "no release channels"), (6, "warning", "fleet's settings (coreos.fleet)")],
    ),
    "best-effort without etcd": (
        doc("coreos:\n  update:\n    reboot_strategy: best-effort\n"),
        [(4, "warning", '"best-effort" is taken as "reboot" (it runs neither etcd nor fleet)')],
    ),
    "a window without its length": (
        doc("coreos:\n  locksmith:\n    window_start: Thu 04:00\n"),
        [(4, "error", "REBOOT_WINDOW_START needs REBOOT_WINDOW_LENGTH too")],
    ),
    "a bad window start": (
        doc("coreos:\n  locksmith:\n    window_start: Someday 04:00\n    window_length: 1h\n"),
        [(4, "error", "coreos.locksmith: ")],
    ),
    "unknown key in a unit": (
        doc("coreos:\n  units:\n    - name: a.service\n      start: true\n"),
        [(5, "warning", 'unrecognized key "start"')],
    ),
    "duplicate key": (
        doc("hostname: a\nhostname: b\n"),
        [(3, "warning", 'duplicate key "hostname"')],
    ),
    "dashes and underscores": (
        doc("ssh-authorized-keys: [k]\nmanage-etc-hosts: localhost\n"),
        [],
    ),
    "hostname as a list": (doc("hostname: [a]\n"), [(2, "error", '"hostname" (want a string)')]),
    "bad hostname": (doc("hostname: -bad_name\n"), [(2, "error", "invalid hostname")]),
    "numeric hostname is text": (doc("hostname: 1234\n"), []),
    "users not a list": (doc("users: alice\n"), [(2, "error", '"users" (want a list)')]),
    "user without a name": (doc("users:\n  - gecos: x\n"), [(3, "error", 'needs a "name"')]),
    "bad user name": (doc("users:\n  - name: Alice!\n"), [(3, "error", "invalid user name")]),
    "groups not a list": (
        doc("users:\n  - name: a\n    groups: sudo\n"),
        [(4, "error", '"groups" (want a list)')],
    ),
    "quoted boolean": (
        doc("users:\n  - name: a\n    system: 'yes'\n"),
        [(4, "error", '"system" (want true or false)')],
    ),
    "file under /usr": (
        doc("write_files:\n  - path: /usr/lib/x\n"),
        [(3, "error", "read-only filesystem")],
    ),
    "file under /usr by ..": (
        doc("write_files:\n  - path: /etc/../usr/x\n"),
        [(3, "error", "read-only filesystem")],
    ),
    "/usrlocal is not /usr": (doc("write_files:\n  - path: /usrlocal/x\n"), []),
    "relative path": (doc("write_files:\n  - path: etc/x\n"), [(3, "error", "must be absolute")]),
    "file without a path": (
        doc("write_files:\n  - content: x\n"),
        [(3, "error", 'needs a "path"')],
    ),
    "bad permissions": (
        doc("write_files:\n  - path: /etc/x\n    permissions: '0999'\n"),
        [(4, "error", "invalid permissions '0999'")],
    ),
    "bad owner": (
        doc("write_files:\n  - path: /etc/x\n    owner: 'a b'\n"),
        [(4, "error", "invalid owner")],
    ),
    "unknown encoding": (
        doc("write_files:\n  - path: /etc/x\n    encoding: rot13\n"),
        [(4, "error", "invalid encoding 'rot13'")],
    ),
    "bad base64": (
        doc("write_files:\n  - path: /etc/x\n    encoding: b64\n    content: '@@@'\n"),
        [(5, "error", 'content cannot be decoded as "b64"')],
    ),
    "gzip that is not": (
        doc("write_files:\n  - path: /etc/x\n    encoding: gzip\n    content: plain\n"),
        [(5, "error", 'content cannot be decoded as "gzip"')],
    ),
    "base64 that is not gzip": (
        doc(f"write_files:\n  - path: /etc/x\n    encoding: gz+b64\n    content: {B64}\n"),
        [(5, "error", 'content cannot be decoded as "gz+b64"')],
    ),
    "manage_etc_hosts other than localhost": (
        doc("manage_etc_hosts: true\n"),
        [(2, "error", "invalid value 'true' for \"manage_etc_hosts\"")],
    ),
    "unit command": (
        doc("coreos:\n  units:\n    - name: a.service\n      command: begin\n"),
        [(5, "error", "invalid command 'begin'")],
    ),
    "unit name": (
        doc("coreos:\n  units:\n    - name: ../../usr/lib/a.service\n"),
        [(4, "error", "invalid unit name")],
    ),
    "unit type": (
        doc("coreos:\n  units:\n    - name: a.conf\n"),
        [(4, "error", "invalid unit name 'a.conf'")],
    ),
    "unit without name": (
        doc("coreos:\n  units:\n    - command: start\n"),
        [(4, "error", 'a unit needs a "name"')],
    ),
    "masked unit with content": (
        doc("coreos:\n  units:\n    - name: a.service\n      mask: true\n      content: x\n"),
        [(5, "error", "masked unit cannot have content")],
    ),
    "enable as text": (
        doc("coreos:\n  units:\n    - name: a.service\n      enable: 'true'\n"),
        [(5, "error", '"enable" (want true or false)')],
    ),
    "drop-in name": (
        doc("coreos:\n  units:\n    - name: a.service\n      drop-ins:\n        - name: x.txt\n"),
        [(6, "error", "invalid drop-in name 'x.txt'")],
    ),
    "network unit enable": (
        doc("coreos:\n  units:\n    - name: a.network\n      enable: true\n"),
        [(5, "warning", '"enable" does nothing for network units')],
    ),
    "etcd2 unknown flag": (
        doc("coreos:\n  etcd2:\n    name: a\n    peer_ca_file: /x\n"),
        [(5, "warning", '"peer_ca_file" is not an etcd 3.4 flag')],
    ),
    "etcd2 list value": (
        doc("coreos:\n  etcd2:\n    initial-cluster: [a, b]\n"),
        [(4, "error", '"coreos.etcd2.initial_cluster" (want a string)')],
    ),
    "etcd2 multi-line value": (
        doc("coreos:\n  etcd2:\n    name: |\n      a\n      b\n"),
        [(4, "error", "on one line")],
    ),
    "etcd2 proxy value": (
        doc("coreos:\n  etcd2:\n    proxy: sometimes\n"),
        [(4, "error", "invalid value 'sometimes' for proxy")],
    ),
    "etcd2 not a map": (doc("coreos:\n  etcd2: [a]\n"), [(3, "error", "(want a mapping)")]),
    "fleet unknown setting": (
        doc("coreos:\n  fleet:\n    public-ip: 10.0.0.1\n    token_limit: 10\n"),
        [(5, "warning", 'fleetd has no setting "token_limit"')],
    ),
    "fleet bad value": (
        doc("coreos:\n  fleet:\n    agent_ttl: soon\n"),
        [(4, "error", "coreos.fleet: agent_ttl: invalid duration 'soon'")],
    ),
    "findings in line order": (
        doc("a: 1\ncoreos:\n  b: 2\nhostname: [x]\nc: 3\n"),
        [
            (2, "warning", '"a"'),
            (4, "warning", '"b"'),
            (5, "error", '"hostname"'),
            (6, "warning", '"c"'),
        ],
    ),
}


@pytest.mark.parametrize("text, expected", FINDINGS.values(), ids=FINDINGS.keys())
def test_findings(text: str, expected: list[tuple[int, str, str]]) -> None:
    found = findings(text)
    assert len(found) == len(expected), found
    for (line, level, message), (want_line, want_level, piece) in zip(found, expected, strict=True):
        assert (line, level) == (want_line, want_level), found
        assert piece in message, found


def test_a_finding_prints_as_coreos_cloudinit_does() -> None:
    assert (
        str(Finding(3, "warning", 'unrecognized key "x"'))
        == 'line 3: warning: unrecognized key "x"'
    )


def test_gzip_compressed_user_data_is_read() -> None:
    assert parse(gzip.compress(doc("hostname: zipped\n").encode())).hostname == "zipped"  # type: ignore[arg-type]


def test_users_are_read_with_every_field() -> None:
    config = parse(
        doc(
            "users:\n"
            "  - name: alice\n"
            "    passwd: $6$salt$hash\n"
            "    groups: [sudo, docker]\n"
            "    ssh-authorized-keys:\n      - ssh-ed25519 AAAA alice@a\n"
            "    homedir: /var/alice\n"
            "    shell: /bin/bash\n"
            "    system: yes\n"
            "    primary_group: staff\n"
            "    gecos: Alice A.\n"
            "    no_create_home: true\n"
        )
    )
    (alice,) = config.users
    assert (alice.name, alice.line, alice.passwd) == ("alice", 3, "$6$salt$hash")
    assert alice.groups == ("sudo", "docker")
    assert alice.ssh_authorized_keys == ("ssh-ed25519 AAAA alice@a",)
    assert (alice.homedir, alice.shell, alice.primary_group) == ("/var/alice", "/bin/bash", "staff")
    assert (alice.system, alice.no_create_home, alice.gecos) == (True, True, "Alice A.")


@pytest.mark.parametrize(
    "encoding, content, expected",
    [
        ("''", "plain text", b"plain text"),
        ("b64", B64, b"\x00binary\xff"),
        ("base64", B64, b"\x00binary\xff"),
        ("gz+b64", GZ_B64, b"compressed\n"),
        ("gzip+base64", GZ_B64, b"compressed\n"),
        ("gz+base64", GZ_B64, b"compressed\n"),
        ("gzip+b64", GZ_B64, b"compressed\n"),
    ],
)
def test_file_encodings(encoding: str, content: str, expected: bytes) -> None:
    config = parse(
        doc(f"write_files:\n  - path: /etc/x\n    encoding: {encoding}\n    content: {content}\n")
    )
    assert config.write_files[0].content == expected


def test_base64_may_be_wrapped_over_lines() -> None:
    wrapped = "\n".join(GZ_B64[i : i + 8] for i in range(0, len(GZ_B64), 8))
    body = "".join(f"      {part}\n" for part in wrapped.splitlines())
    config = parse(
        doc(f"write_files:\n  - path: /etc/x\n    encoding: gzip+base64\n    content: |\n{body}")
    )
    assert config.write_files[0].content == b"compressed\n"


@pytest.mark.parametrize(
    "written, mode",
    [("'0600'", 0o600), ("0600", 0o600), ("'644'", 0o644), ("0755", 0o755), ("'1777'", 0o1777)],
)
def test_permissions_are_octal_whether_quoted_or_not(written: str, mode: int) -> None:
    """YAML 1.1 reads an unquoted 0600 as the integer 384; the source text is what counts."""
    config = parse(doc(f"write_files:\n  - path: /etc/x\n    permissions: {written}\n"))
    assert config.write_files[0].permissions == mode


def test_file_defaults() -> None:
    (file,) = parse(doc("write_files:\n  - path: /etc//x/\n")).write_files
    assert (file.path, file.content, file.permissions, file.owner) == ("/etc/x", b"", 0o644, None)


def test_units_and_drop_ins_are_read() -> None:
    config = parse(
        doc(
            "coreos:\n"
            "  units:\n"
            "    - name: web.service\n"
            "      runtime: true\n"
            "      enable: true\n"
            "      command: reload-or-restart\n"
            "      content: |\n        [Service]\n        ExecStart=/bin/true\n"
            "      drop-ins:\n"
            "        - name: 10-env.conf\n"
            "          content: |\n            [Service]\n            Environment=A=1\n"
            "    - name: etcd.service\n      mask: false\n"
        )
    )
    web, etcd = config.units
    assert (web.name, web.runtime, web.enable, web.command) == (
        "web.service",
        True,
        True,
        "reload-or-restart",
    )
    assert web.content == "[Service]\nExecStart=/bin/true\n"
    assert [(d.name, d.content) for d in web.drop_ins] == [
        ("10-env.conf", "[Service]\nEnvironment=A=1\n")
    ]
    assert (etcd.mask, etcd.content) == (False, None)


def test_etcd2_keys_become_variables_in_order() -> None:
    config = parse(
        doc(
            "coreos:\n"
            "  etcd2:\n"
            "    name: node1\n"
            "    initial-cluster: node1=http://10.0.0.1:2380,node2=http://10.0.0.2:2380\n"
            "    initial_cluster_state: new\n"
            "    heartbeat-interval: 100\n"
            "    client-cert-auth: yes\n"
            "    proxy: off\n"
        )
    )
    assert config.etcd2 == (
        ("ETCD_NAME", "node1"),
        ("ETCD_INITIAL_CLUSTER", "node1=http://10.0.0.1:2380,node2=http://10.0.0.2:2380"),
        ("ETCD_INITIAL_CLUSTER_STATE", "new"),
        ("ETCD_HEARTBEAT_INTERVAL", "100"),
        ("ETCD_CLIENT_CERT_AUTH", "true"),  # etcd parses Go booleans: "yes" would not do
        ("ETCD_PROXY", "off"),  # a word here, not YAML 1.1's false
    )


def test_fleet_keys_become_fleet_variables() -> None:
    config = parse(
        doc(
            "coreos:\n"
            "  fleet:\n"
            "    public-ip: 10.0.0.1\n"
            "    metadata: region=eu,disk=ssd\n"
            "    etcd_servers: http://10.0.0.1:2379,http://10.0.0.2:2379\n"
            "    agent_ttl: 30s\n"
        )
    )
    assert config.fleet == (
        ("FLEET_PUBLIC_IP", "10.0.0.1"),
        ("FLEET_METADATA", "region=eu,disk=ssd"),
        ("FLEET_ETCD_SERVERS", "http://10.0.0.1:2379,http://10.0.0.2:2379"),
        ("FLEET_AGENT_TTL", "30s"),
    )


def test_invalid_parts_are_left_out_of_the_model() -> None:
    parsed = parse_cloud_config(
        doc("hostname: [x]\nwrite_files:\n  - path: /usr/x\n  - path: /etc/ok\n")
    )
    assert parsed.errors
    assert parsed.config.hostname is None
    assert [f.path for f in parsed.config.write_files] == ["/etc/ok"]


# -- the plan ---------------------------------------------------------------------------------


def plan(text: str, machine: Machine = CORE_MACHINE, allow_warnings: bool = False) -> list[object]:
    parsed = parse_cloud_config(text)
    if allow_warnings:
        assert parsed.errors == (), parsed.findings
    result = plan_apply(parsed.config if allow_warnings else parse(text), machine)
    assert result.errors == (), result.errors
    return list(result.actions)


def commands(actions: list[object]) -> list[tuple[str, ...]]:
    return [a.argv for a in actions if isinstance(a, RunCommand)]


def files(actions: list[object]) -> dict[str, PutFile]:
    return {a.path: a for a in actions if isinstance(a, PutFile)}


def test_nothing_to_do_plans_nothing() -> None:
    assert plan(doc("")) == []


def test_hostname_goes_through_hostnamed() -> None:
    assert commands(plan(doc("hostname: web1\n"))) == [("hostnamectl", "set-hostname", "web1")]


def test_a_new_user_is_created_and_its_password_set_through_stdin() -> None:
    actions = plan(
        doc(
            "users:\n  - name: alice\n    passwd: $6$x$y\n    groups: [sudo]\n"
            "    gecos: Alice\n    shell: /bin/sh\n    system: true\n"
        )
    )
    useradd, chpasswd = (a for a in actions if isinstance(a, RunCommand))
    assert useradd.argv == (
        "useradd",
        "--comment",
        "Alice",
        "--groups",
        "sudo",
        "--shell",
        "/bin/sh",
        "--create-home",
        "--system",
        "alice",
    )
    assert chpasswd.argv == ("chpasswd", "--encrypted")
    assert chpasswd.input == "alice:$6$x$y\n"
    assert all("$6$" not in part for part in useradd.argv + chpasswd.argv)


def test_an_existing_user_gets_only_its_password_and_a_warning_for_the_rest() -> None:
    result = plan_apply(
        parse(doc("users:\n  - name: core\n    passwd: h\n    shell: /bin/zsh\n")), CORE_MACHINE
    )
    assert commands(list(result.actions)) == [("chpasswd", "--encrypted")]
    assert [(f.line, f.level) for f in result.findings] == [(3, "warning")]
    assert "shell ignored" in result.findings[0].message


def test_ssh_keys_of_core_are_merged_into_the_coreos_cloudinit_file() -> None:
    actions = plan(
        doc(
            "ssh_authorized_keys: [key-b, key-a]\n"
            "users:\n  - name: core\n    ssh_authorized_keys: [key-a]\n"
        )
    )
    assert actions == [
        MakeDirectory("/home/core/.ssh", 0o700, "core:", "ssh_authorized_keys"),
        MakeDirectory("/home/core/.ssh/authorized_keys.d", 0o700, "core:", "ssh_authorized_keys"),
        PutFile(
            "/home/core/.ssh/authorized_keys.d/coreos-cloudinit",
            b"key-a\nkey-b\n",
            0o600,
            "core:",
            "ssh_authorized_keys",
        ),
    ]


def test_a_new_users_keys_go_to_its_new_home() -> None:
    actions = plan(
        doc("users:\n  - name: bob\n    homedir: /srv/bob\n    ssh_authorized_keys: [k]\n")
    )
    assert "/srv/bob/.ssh/authorized_keys.d/coreos-cloudinit" in files(actions)
    assert isinstance(actions[0], RunCommand) and actions[0].argv[0] == "useradd"


# (document, machine, [(line, a piece of the error)]): what would fail half-way is refused first.
MACHINE_ERRORS = {
    "core's keys without core": (
        doc("hostname: a\nssh_authorized_keys: [k]\n"),
        Machine("m", {"root": "/root"}, frozenset({"root"})),
        [(3, "user core does not exist")],
    ),
    "a missing group": (
        doc("users:\n  - name: bob\n    groups: [wheel]\n"),
        CORE_MACHINE,
        [(3, "group wheel does not exist")],
    ),
    "a missing primary group": (
        doc("users:\n  - name: bob\n    primary_group: staff\n"),
        CORE_MACHINE,
        [(3, "group staff does not exist")],
    ),
    "a file owned by nobody known": (
        doc("write_files:\n  - path: /etc/x\n    owner: alice:alice\n"),
        CORE_MACHINE,
        [(3, "owner alice does not exist"), (3, "group alice does not exist")],
    ),
}


@pytest.mark.parametrize(
    "text, machine, expected", MACHINE_ERRORS.values(), ids=MACHINE_ERRORS.keys()
)
def test_machine_errors(text: str, machine: Machine, expected: list[tuple[int, str]]) -> None:
    errors = plan_apply(parse(text), machine).errors
    assert [
        (e.line, piece in e.message) for e, (_, piece) in zip(errors, expected, strict=True)
    ] == [(line, True) for line, _ in expected]


def test_owners_made_by_the_same_config_or_numeric_are_fine() -> None:
    text = doc(
        "users:\n  - name: alice\n"
        "write_files:\n  - path: /etc/a\n    owner: alice:alice\n"
        "  - path: /etc/b\n    owner: '1000:1000'\n"
    )
    assert plan_apply(parse(text), CORE_MACHINE).errors == ()


def test_write_files_keep_mode_owner_and_bytes() -> None:
    actions = plan(
        doc(
            "write_files:\n  - path: /etc/a\n    permissions: '0600'\n    owner: core:sudo\n"
            f"    encoding: b64\n    content: {B64}\n"
        )
    )
    assert actions == [PutFile("/etc/a", b"\x00binary\xff", 0o600, "core:sudo", "write_files")]


@pytest.mark.parametrize(
    "body, hostname",
    [
        ("hostname: web1\nmanage_etc_hosts: localhost\n", "web1"),
        ("manage_etc_hosts: localhost\n", "old-name"),
    ],
)
def test_etc_hosts_names_the_configured_or_the_current_hostname(body: str, hostname: str) -> None:
    hosts = files(plan(doc(body)))["/etc/hosts"]
    assert hosts.content.decode().splitlines()[0] == f"127.0.0.1 localhost {hostname}"


def test_etcd2_unmasks_etcd_and_writes_a_runtime_drop_in() -> None:
    actions = plan(
        doc("coreos:\n  etcd2:\n    name: '%H-1'\n    initial-cluster-token: 'say \"hi\"'\n")
    )
    assert commands(actions) == [
        ("systemctl", "unmask", "--no-reload", "etcd.service"),
        ("systemctl", "daemon-reload"),
    ]
    drop_in = files(actions)["/run/systemd/system/etcd.service.d/20-cloudinit.conf"]
    assert drop_in.content.decode() == (
        "[Service]\n"
        'Environment="ETCD_NAME=%%H-1"\n'
        'Environment="ETCD_INITIAL_CLUSTER_TOKEN=say \\"hi\\""\n'
    )


def test_fleet_writes_a_fleetd_drop_in() -> None:
    actions = plan(doc("coreos:\n  fleet:\n    public-ip: 10.0.0.1\n    metadata: role=web\n"))
    drop_in = files(actions)["/run/systemd/system/fleetd.service.d/20-cloudinit.conf"]
    assert drop_in.content.decode().splitlines() == [
        "[Service]",
        'Environment="FLEET_PUBLIC_IP=10.0.0.1"',
        'Environment="FLEET_METADATA=role=web"',
    ]
    assert commands(actions) == [("systemctl", "daemon-reload")]


def test_update_and_locksmith_write_the_update_agents_config() -> None:
    actions = plan(
        doc(
            "coreos:\n"
            "  fleet:\n    public-ip: 10.0.0.1\n"
            "  update:\n    reboot_strategy: best-effort\n"
            "    server: http://10.0.2.100:8470/\n"
            "  locksmith:\n    window_start: Thu 04:00\n    window_length: 1h30m\n"
            "    endpoint: http://10.0.0.11:2379,http://10.0.0.12:2379\n"
        ),
        allow_warnings=True,
    )
    text = files(actions)["/etc/flotilla/update.conf"].content.decode()
    assert text.splitlines()[1:] == [
        "REBOOT_STRATEGY=etcd-lock",  # best-effort, with fleet configured here
        "SERVER=http://10.0.2.100:8470/",
        "REBOOT_WINDOW_START=Thu 04:00",
        "REBOOT_WINDOW_LENGTH=1h30m",
        "ETCD_ENDPOINTS=http://10.0.0.11:2379,http://10.0.0.12:2379",
    ]
    config = parse_config(text)  # what the update agent makes of it
    assert (config.reboot_strategy, config.server) == ("etcd-lock", "http://10.0.2.100:8470/")
    assert config.reboot_window is not None and len(config.etcd_endpoints) == 2


def test_the_etcd_password_goes_to_a_root_only_environment_file() -> None:
    """A drop-in is world-readable and `systemctl show` prints Environment= to anyone."""
    actions = plan(
        doc("coreos:\n  fleet:\n    public-ip: 10.0.0.1\n    etcd-password: 'p\"a$s`s\\'\n")
    )
    written = files(actions)
    drop_in = written["/run/systemd/system/fleetd.service.d/20-cloudinit.conf"]
    assert drop_in.content.decode().splitlines() == [
        "[Service]",
        'Environment="FLEET_PUBLIC_IP=10.0.0.1"',
        "EnvironmentFile=/run/flotilla/fleetd-secrets.env",
    ]
    secrets = written["/run/flotilla/fleetd-secrets.env"]
    assert secrets.mode == 0o600
    assert secrets.content.decode() == 'FLEET_ETCD_PASSWORD="p\\"a\\$s\\`s\\\\"\n'
    assert 'p"a$s' not in drop_in.content.decode()


UNIT_PLANS = {
    "content and a start": (
        "    - name: web.service\n      command: start\n      content: x\n",
        ["/etc/systemd/system/web.service"],
        [("systemctl", "daemon-reload"), ("systemctl", "--no-block", "start", "web.service")],
    ),
    "runtime content is unmasked": (
        "    - name: web.service\n      runtime: true\n      content: x\n",
        ["/run/systemd/system/web.service"],
        [
            ("systemctl", "--no-reload", "unmask", "web.service"),
            ("systemctl", "--no-reload", "unmask", "--runtime", "web.service"),
            ("systemctl", "daemon-reload"),
        ],
    ),
    "drop-ins of a unit the image ships": (
        "    - name: ssh.service\n      command: restart\n"
        "      drop-ins:\n        - name: 50-a.conf\n          content: x\n",
        ["/etc/systemd/system/ssh.service.d/50-a.conf"],
        [("systemctl", "daemon-reload"), ("systemctl", "--no-block", "restart", "ssh.service")],
    ),
    "mask": (
        "    - name: a.service\n      mask: true\n",
        [],
        [("systemctl", "--no-reload", "mask", "a.service"), ("systemctl", "daemon-reload")],
    ),
    "runtime mask": (
        "    - name: a.service\n      mask: true\n      runtime: true\n",
        [],
        [
            ("systemctl", "--no-reload", "mask", "--runtime", "a.service"),
            ("systemctl", "daemon-reload"),
        ],
    ),
    "unmask": (
        "    - name: etcd.service\n      mask: false\n",
        [],
        [("systemctl", "--no-reload", "unmask", "etcd.service"), ("systemctl", "daemon-reload")],
    ),
    "enable": (
        "    - name: a.service\n      enable: true\n      content: x\n",
        ["/etc/systemd/system/a.service"],
        [("systemctl", "--no-reload", "enable", "a.service"), ("systemctl", "daemon-reload")],
    ),
    "network unit": (
        "    - name: 10-eth.network\n      content: x\n",
        ["/etc/systemd/network/10-eth.network"],
        [
            ("systemctl", "daemon-reload"),
            ("systemctl", "--no-block", "restart", "systemd-networkd.service"),
        ],
    ),
}


@pytest.mark.parametrize("units, paths, argvs", UNIT_PLANS.values(), ids=UNIT_PLANS.keys())
def test_unit_plans(units: str, paths: list[str], argvs: list[tuple[str, ...]]) -> None:
    actions = plan(doc("coreos:\n  units:\n" + units))
    assert list(files(actions)) == paths
    assert commands(actions) == argvs


def test_everything_in_coreos_cloudinit_order_with_one_reload_before_the_commands() -> None:
    actions = plan(
        doc(
            "coreos:\n"
            "  units:\n"
            "    - name: b.service\n      content: x\n      command: start\n"
            "    - name: a.service\n      command: stop\n"
            "  fleet:\n    public-ip: 10.0.0.1\n"
            "  etcd2:\n    name: n\n"
            "manage_etc_hosts: localhost\n"
            "write_files:\n  - path: /etc/systemd/system/c.service\n"
            "ssh_authorized_keys: [k]\n"
            "hostname: h\n"
        )
    )
    reasons = [a.reason for a in actions]  # type: ignore[attr-defined]
    order = [
        "hostname",
        "ssh_authorized_keys",
        "write_files",
        "manage_etc_hosts",
        "coreos.etcd2",
        "coreos.fleet",
        "coreos.units",
    ]
    assert sorted(reasons, key=order.index) == reasons
    assert commands(actions)[-3:] == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "--no-block", "start", "b.service"),
        ("systemctl", "--no-block", "stop", "a.service"),
    ]
    assert commands(actions).count(("systemctl", "daemon-reload")) == 1


def test_a_unit_file_from_write_files_is_reloaded_too() -> None:
    actions = plan(doc("write_files:\n  - path: /etc/systemd/system/c.service\n"))
    assert commands(actions) == [("systemctl", "daemon-reload")]


def test_planning_is_deterministic() -> None:
    text = doc("hostname: a\nusers:\n  - name: bob\ncoreos:\n  etcd2:\n    name: n\n")
    assert plan_apply(parse(text), CORE_MACHINE) == plan_apply(parse(text), CORE_MACHINE)


# -- the executor's files, in a scratch root --------------------------------------------------


def test_files_are_written_whole_with_mode_and_owner(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nalice:x:1234:4321::/home/alice:/bin/sh\n"
    )
    (tmp_path / "etc/group").write_text("root:x:0:\nstaff:x:50:\n")
    (tmp_path / "etc/hostname").write_text("scratch\n")
    actions = [
        PutFile("/var/lib/app/config", b"v2", 0o640, "alice:staff", "write_files"),
        MakeDirectory("/home/alice/.ssh", 0o700, "alice:", "ssh_authorized_keys"),
    ]
    (tmp_path / "var/lib/app").mkdir(parents=True)
    (tmp_path / "var/lib/app/config").write_text("v1")
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    execute(actions, tmp_path, runner=pytest.fail)
    written = (tmp_path / "var/lib/app/config").stat()
    assert (tmp_path / "var/lib/app/config").read_bytes() == b"v2"
    assert (stat.S_IMODE(written.st_mode), written.st_uid, written.st_gid) == (0o640, 1234, 50)
    assert sorted(p.name for p in (tmp_path / "var/lib/app").iterdir()) == [
        "config"
    ]  # no temp left
    ssh = (tmp_path / "home/alice/.ssh").stat()
    assert (stat.S_IMODE(ssh.st_mode), ssh.st_uid, ssh.st_gid) == (0o700, 1234, 4321)
    assert stat.S_IMODE((tmp_path / "home").stat().st_mode) == 0o755
    machine = read_machine(tmp_path)
    assert machine.hostname == "scratch"
    assert machine.homes["alice"] == "/home/alice" and "staff" in machine.groups
