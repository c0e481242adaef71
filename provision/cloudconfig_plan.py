"""The plan that applies a checked cloud-config: machine snapshot -> actions with reasons. (pure)

`plan_apply(config, machine)` decides everything (which files, which commands, in
coreos-cloudinit's order) and checks the config against the machine (users and groups it names
must exist or be created first), so nothing is written unless the whole plan is sound.
`provision/cloudconfig_apply.py` reads the machine and performs the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .cloudconfig_model import CloudConfig, Finding, Unit, User
from .cloudconfig_schema import UPDATE_CONF

SSH_KEY_FILE = ".ssh/authorized_keys.d/coreos-cloudinit"
ETCD_DROP_IN = "/run/systemd/system/etcd.service.d/20-cloudinit.conf"
FLEET_DROP_IN = "/run/systemd/system/fleetd.service.d/20-cloudinit.conf"
FLEET_SECRETS = "/run/flotilla/fleetd-secrets.env"
SECRET_VARIABLES = frozenset({"FLEET_ETCD_PASSWORD"})
SYSTEMD_DIRECTORIES = ("/etc/systemd/", "/run/systemd/")
# Fields useradd reads; for a user that already exists they are ignored (coreos-cloudinit's rule).
CREATION_FIELDS = ("groups", "homedir", "shell", "system", "primary_group", "gecos")


@dataclass(frozen=True)
class Machine:
    """What the plan needs to know about the machine: its hostname, accounts and groups."""

    hostname: str
    homes: Mapping[str, str]  # user name -> home directory
    groups: frozenset[str]


@dataclass(frozen=True)
class PutFile:
    path: str
    content: bytes
    mode: int
    owner: str | None  # chown(1) syntax: "user", "user:group", "user:" (the login group)
    reason: str

    def __str__(self) -> str:
        return f"task=write path={self.path} mode={self.mode:04o} reason={self.reason}"


@dataclass(frozen=True)
class MakeDirectory:
    path: str
    mode: int
    owner: str | None
    reason: str

    def __str__(self) -> str:
        return f"task=mkdir path={self.path} mode={self.mode:04o} reason={self.reason}"


@dataclass(frozen=True)
class RunCommand:
    argv: tuple[str, ...]
    reason: str
    input: str | None = None  # secrets go here, not into argv (which any process can read)

    def __str__(self) -> str:
        return f"task=run argv={' '.join(self.argv)!r} reason={self.reason}"


Action = PutFile | MakeDirectory | RunCommand


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    findings: tuple[Finding, ...]  # problems of this config on this machine

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")


def plan_apply(config: CloudConfig, machine: Machine) -> Plan:
    """The actions that apply `config` to `machine`, in coreos-cloudinit's order."""
    actions: list[Action] = [
        *plan_hostname(config),
        *plan_users(config, machine),
        *plan_write_files(config),
        *plan_etc_hosts(config, machine),
        *plan_etcd2(config),
        *plan_fleet(config),
        *plan_update(config),
        *plan_units(config),
    ]
    actions += plan_reload(actions)
    actions += plan_commands(config)
    return Plan(tuple(actions), tuple(check_machine(config, machine)))


def plan_hostname(config: CloudConfig) -> list[Action]:
    if config.hostname is None:
        return []
    return [RunCommand(("hostnamectl", "set-hostname", config.hostname), "hostname")]


def plan_users(config: CloudConfig, machine: Machine) -> list[Action]:
    actions: list[Action] = []
    for user in config.users:
        if user.name not in machine.homes:
            actions.append(RunCommand(useradd_argv(user), "users"))
        if user.passwd is not None:
            line = f"{user.name}:{user.passwd}\n"
            actions.append(RunCommand(("chpasswd", "--encrypted"), "users", input=line))
    for name, keys in authorized_keys(config).items():
        actions += plan_ssh_keys(name, home_of(name, config, machine), keys)
    return actions


def useradd_argv(user: User) -> tuple[str, ...]:
    argv = ["useradd"]
    options = (
        ("--comment", user.gecos),
        ("--home-dir", user.homedir),
        ("--gid", user.primary_group),
        ("--groups", ",".join(user.groups) or None),
        ("--shell", user.shell),
    )
    for option, value in options:
        if value is not None:
            argv += [option, value]
    argv.append("--no-create-home" if user.no_create_home else "--create-home")
    if user.system:
        argv.append("--system")
    return (*argv, user.name)


def authorized_keys(config: CloudConfig) -> dict[str, tuple[str, ...]]:
    """Each user's keys; the top-level `ssh_authorized_keys` are core's (after its own)."""
    keys: dict[str, list[str]] = {}
    for user in config.users:
        keys.setdefault(user.name, []).extend(user.ssh_authorized_keys)
    keys.setdefault("core", []).extend(config.ssh_authorized_keys)
    return {name: tuple(dict.fromkeys(found)) for name, found in keys.items() if found}


def home_of(name: str, config: CloudConfig, machine: Machine) -> str:
    if name in machine.homes:
        return machine.homes[name]
    user = next((user for user in config.users if user.name == name), None)
    return (user.homedir if user else None) or f"/home/{name}"


def plan_ssh_keys(name: str, home: str, keys: Sequence[str]) -> list[Action]:
    # sshd refuses keys in files or directories others can write: the user's own, 0700/0600.
    owner = f"{name}:"
    ssh = f"{home.rstrip('/')}/.ssh"
    text = "".join(f"{key}\n" for key in keys)
    return [
        MakeDirectory(ssh, 0o700, owner, "ssh_authorized_keys"),
        MakeDirectory(f"{ssh}/authorized_keys.d", 0o700, owner, "ssh_authorized_keys"),
        PutFile(
            f"{home.rstrip('/')}/{SSH_KEY_FILE}", text.encode(), 0o600, owner, "ssh_authorized_keys"
        ),
    ]


def plan_write_files(config: CloudConfig) -> list[Action]:
    return [
        PutFile(file.path, file.content, file.permissions, file.owner, "write_files")
        for file in config.write_files
    ]


def plan_etc_hosts(config: CloudConfig, machine: Machine) -> list[Action]:
    if config.manage_etc_hosts != "localhost":
        return []
    hostname = config.hostname or machine.hostname
    # localhost stays resolvable too (coreos-cloudinit wrote only the hostname line).
    text = f"127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost ip6-loopback\n"
    return [PutFile("/etc/hosts", text.encode(), 0o644, None, "manage_etc_hosts")]


def plan_etcd2(config: CloudConfig) -> list[Action]:
    if not config.etcd2:
        return []
    # The image masks etcd.service (a machine runs etcd only when its config asks for it).
    unmask = RunCommand(("systemctl", "unmask", "--no-reload", "etcd.service"), "coreos.etcd2")
    return [unmask, environment_drop_in(ETCD_DROP_IN, config.etcd2, "coreos.etcd2")]


def plan_update(config: CloudConfig) -> list[Action]:
    """coreos.update and coreos.locksmith: the update agent's update.conf, whole."""
    if not config.update:
        return []
    lines = [f"{key}={value}" for key, value in config.update]
    text = "# Written by flotilla-cloudinit from coreos.update and coreos.locksmith.\n"
    text += "\n".join(lines) + "\n"
    return [PutFile(UPDATE_CONF, text.encode(), 0o644, None, "coreos.update")]


def plan_fleet(config: CloudConfig) -> list[Action]:
    """fleetd's settings as a drop-in. A secret goes to a root-only EnvironmentFile instead:
    drop-ins are world-readable, and so is every Environment= through `systemctl show`."""
    if not config.fleet:
        return []
    public = [(name, value) for name, value in config.fleet if name not in SECRET_VARIABLES]
    secret = [(name, value) for name, value in config.fleet if name in SECRET_VARIABLES]
    if not secret:
        return [environment_drop_in(FLEET_DROP_IN, public, "coreos.fleet")]
    text = "".join(environment_file_line(name, value) for name, value in secret)
    return [
        PutFile(FLEET_SECRETS, text.encode(), 0o600, None, "coreos.fleet"),
        environment_drop_in(FLEET_DROP_IN, public, "coreos.fleet", (FLEET_SECRETS,)),
    ]


def environment_drop_in(
    path: str,
    variables: Iterable[tuple[str, str]],
    reason: str,
    environment_files: Iterable[str] = (),
) -> PutFile:
    lines = [
        "[Service]",
        *(environment_line(name, value) for name, value in variables),
        *(f"EnvironmentFile={file}" for file in environment_files),
    ]
    return PutFile(path, ("\n".join(lines) + "\n").encode(), 0o644, None, reason)


def environment_file_line(name: str, value: str) -> str:
    """`NAME="value"` as systemd's EnvironmentFile= reads it: in double quotes, a backslash
    keeps `"`, `\\`, `$` and a backtick literal; nothing is expanded."""
    escaped = "".join(f"\\{c}" if c in '"\\$`' else c for c in value)
    return f'{name}="{escaped}"\n'


def environment_line(name: str, value: str) -> str:
    """`Environment="NAME=value"`: systemd unquotes C escapes and expands %-specifiers."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{name}={escaped}"'


def unit_directory(unit: Unit) -> str:
    base = "/run" if unit.runtime else "/etc"
    return f"{base}/systemd/network" if unit.is_network else f"{base}/systemd/system"


def plan_units(config: CloudConfig) -> list[Action]:
    actions: list[Action] = []
    for unit in config.units:
        directory = unit_directory(unit)
        if unit.content is not None:
            content = unit.content.encode()
            actions.append(
                PutFile(f"{directory}/{unit.name}", content, 0o644, None, "coreos.units")
            )
        for drop_in in unit.drop_ins:
            path = f"{directory}/{unit.name}.d/{drop_in.name}"
            actions.append(PutFile(path, drop_in.content.encode(), 0o644, None, "coreos.units"))
        actions += plan_unit_state(unit)
    return actions


def plan_unit_state(unit: Unit) -> list[Action]:
    """mask, unmask and enable: files systemctl makes without a reload (one comes after all)."""
    runtime = ("--runtime",) if unit.runtime else ()
    argvs: list[tuple[str, ...]] = []
    if unit.mask:
        argvs.append(("mask", *runtime, unit.name))
    elif unit.mask is False or unit.runtime:
        # A mask in /etc hides a runtime unit too; coreos-cloudinit unmasks runtime units.
        argvs.append(("unmask", unit.name))
        argvs += [("unmask", "--runtime", unit.name)] if unit.runtime else []
    if unit.enable:
        argvs.append(("enable", *runtime, unit.name))
    return [RunCommand(("systemctl", "--no-reload", *argv), "coreos.units") for argv in argvs]


def plan_reload(actions: Sequence[Action]) -> list[Action]:
    """One daemon-reload when anything systemd reads changed; networkd re-reads on restart."""
    paths = [action.path for action in actions if isinstance(action, PutFile)]
    systemd_changed = any(path.startswith(SYSTEMD_DIRECTORIES) for path in paths)
    systemd_changed |= any(
        isinstance(action, RunCommand) and action.argv[0] == "systemctl" for action in actions
    )
    reload: list[Action] = []
    if systemd_changed:
        reload.append(RunCommand(("systemctl", "daemon-reload"), "coreos.units"))
    if any("/systemd/network/" in path for path in paths):
        restart = ("systemctl", "--no-block", "restart", "systemd-networkd.service")
        reload.append(RunCommand(restart, "coreos.units"))
    return reload


def plan_commands(config: CloudConfig) -> list[Action]:
    # --no-block: this runs before multi-user.target, which a started unit may be ordered after.
    return [
        RunCommand(("systemctl", "--no-block", unit.command, unit.name), "coreos.units")
        for unit in config.units
        if unit.command is not None
    ]


def check_machine(config: CloudConfig, machine: Machine) -> list[Finding]:
    """What would fail half-way through: accounts and groups the config names but nobody makes."""
    findings: list[Finding] = []
    users = set(machine.homes) | {user.name for user in config.users}
    # useradd makes a group named after each new user, unless a primary group is given.
    new_groups = {
        u.name for u in config.users if u.name not in machine.homes and not u.primary_group
    }
    groups = machine.groups | new_groups
    if config.ssh_authorized_keys and "core" not in users:
        line = config.lines.get("ssh_authorized_keys", 1)
        findings.append(Finding(line, "error", "user core does not exist (add it to users)"))
    for user in config.users:
        findings += check_user(user, machine, groups)
    for file in config.write_files:
        for problem in owner_problems(file.owner, users, groups):
            findings.append(Finding(file.line, "error", f"{file.path}: {problem}"))
    return findings


def check_user(user: User, machine: Machine, groups: frozenset[str] | set[str]) -> list[Finding]:
    if user.name in machine.homes:
        given = [name for name in CREATION_FIELDS if getattr(user, name) not in (None, (), False)]
        if not given:
            return []
        ignored = ", ".join(given)
        message = f"user {user.name} exists: {ignored} ignored (only passwd and keys apply)"
        return [Finding(user.line, "warning", message)]
    wanted = [*user.groups, *([user.primary_group] if user.primary_group else [])]
    return [
        Finding(user.line, "error", f"user {user.name}: group {group} does not exist")
        for group in wanted
        if group not in groups
    ]


def owner_problems(owner: str | None, users: set[str], groups: Iterable[str]) -> list[str]:
    if owner is None:
        return []
    user, _, group = owner.partition(":")
    problems = []
    if user and not user.isdigit() and user not in users:
        problems.append(f"owner {user} does not exist")
    if group and not group.isdigit() and group not in set(groups):
        problems.append(f"group {group} does not exist")
    return problems
