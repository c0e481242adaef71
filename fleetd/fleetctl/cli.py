"""fleetctl: argument parsing and output. The work is done by a driver (driver.Driver): fleet's
HTTP API (`--driver=API`, the default, api_driver.ApiClient) or etcd directly (`--driver=etcd`,
etcd_driver.EtcdDriver).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Collection, Iterator, Mapping, MutableMapping, Sequence

import click

from .. import __version__ as VERSION
from ..keys import DEFAULT_PREFIX
from .session import Failure, session_options
from .tables import FieldError

# The commands that live in modules of their own, by name, and the module each is in (the
# command is that module's function of the same name, "-" read as "_"). A module is imported
# only when its command runs, or when help lists every command: `fleetctl version` then loads
# no command logic, no driver, no HTTP or etcd client.
COMMAND_MODULES = {
    "submit": "lifecycle",
    "load": "lifecycle",
    "start": "lifecycle",
    "stop": "lifecycle",
    "unload": "lifecycle",
    "destroy": "lifecycle",
    "restart": "lifecycle",
    "cat": "inspection",
    "list-units": "inspection",
    "list-unit-files": "inspection",
    "list-machines": "inspection",
    "status": "inspection",
    "journal": "inspection",
    "ssh": "inspection",
    "drain": "draining",
    "undrain": "draining",
    "events": "events_cmd",
    "dashboard": "dashboard",
}

# Root flags that are booleans in fleet (Go's pflag): given bare they mean true, and a value
# comes only after "=", so `--experimental-api list-units` never takes the command as its value.
BOOLEAN_FLAGS = ("--experimental-api", "--strict-host-key-checking")


def pflag_booleans(args: list[str], commands: Collection[str]) -> list[str]:
    """The root's arguments with bare boolean flags given their `=true` (up to the command)."""
    normalized = []
    for index, arg in enumerate(args):
        if arg in commands:
            return normalized + args[index:]
        normalized.append(f"{arg}=true" if arg in BOOLEAN_FLAGS else arg)
    return normalized


# Root options that stay where they are when they follow the command: fleet takes -v/--version
# only as the first argument, and -h after a command is that command's help.
NOT_HOISTED = ("-v", "--version", "-h", "--help")


def option_arity(params: Sequence[click.Parameter]) -> dict[str, bool]:
    """Each option name of `params`, and whether a value follows it as the next argument."""
    arity = {}
    for param in params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                arity[name] = not param.is_flag and name not in BOOLEAN_FLAGS
    return arity


def command_index(args: Sequence[str], commands: Collection[str], root: Mapping[str, bool]) -> int:
    """Where the command name is among the root's arguments (-1 when there is none): the first
    argument that is neither a root option nor the value of one."""
    value_next = False
    for index, arg in enumerate(args):
        if value_next:
            value_next = False
        elif arg == "--":
            return -1
        elif arg.startswith("-"):
            value_next = root.get(
                arg, False
            )  # `--endpoint=x` carries its value, `--endpoint x` not
        else:
            return index if arg in commands else -1
    return -1


def hoist_root_options(
    args: Sequence[str],
    root: Mapping[str, bool],
    own: Mapping[str, bool],
    interspersed: bool,
) -> tuple[list[str], list[str]]:
    """fleet's root flags are cobra's persistent flags, accepted after the command too: split a
    command's arguments into the root options among them (with their values) and the rest.

    The command's own options win over the root's of the same name (`journal --output`), and
    nothing after `--` is touched, nor after the first argument of a command that takes
    everything from there on as its own (`ssh m1 ls --debug` runs `ls --debug`)."""
    hoisted: list[str] = []
    kept: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        name = arg.split("=", 1)[0]
        if arg == "--" or (not arg.startswith("-") and not interspersed):
            return hoisted, kept + list(args[index:])
        takes_value = "=" not in arg and index + 1 < len(args)
        if name in own or name not in root or name in NOT_HOISTED:
            taken = 2 if own.get(name) and takes_value else 1
            kept += args[index : index + taken]
        else:
            taken = 2 if root[name] and takes_value else 1
            hoisted += args[index : index + taken]
        index += taken
    return hoisted, kept


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported from its module (COMMAND_MODULES) the first
    time it is looked up; commands added the usual way are kept as they are."""

    def __init__(self, modules: Mapping[str, str]) -> None:
        self.modules = dict(modules)
        self.loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self.loaded:
            module = importlib.import_module(f"{__package__}.{self.modules[name]}")
            self.loaded[name] = getattr(module, name.replace("-", "_"))
        return self.loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.modules.pop(name, None)
        self.loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:  # without importing anything
        return name in self.modules or name in self.loaded

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self.modules, *self.loaded]))

    def __len__(self) -> int:
        return len(self.modules.keys() | self.loaded.keys())


class FleetctlGroup(click.Group):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.commands = LazyCommands(COMMAND_MODULES)  # type: ignore[assignment]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        root = option_arity(self.params)
        index = command_index(args, self.commands, root)
        if index >= 0:
            command = self.commands[args[index]]
            hoisted, rest = hoist_root_options(
                args[index + 1 :],
                root,
                option_arity(command.params),
                command.context_settings.get(
                    "allow_interspersed_args", command.allow_interspersed_args
                ),
            )
            args = [*args[:index], *hoisted, args[index], *rest]
        return super().parse_args(ctx, pflag_booleans(args, self.commands))

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (Failure, FieldError) as error:
            click.echo(str(error), err=True)
            sys.exit(1)


DEPRECATED = "DEPRECATED: do not use this flag."

# fleet takes -h as well as --help, on the group and every command. `ssh` stops parsing options
# at its first argument, so `fleetctl ssh m1 ls -h` still hands -h to the remote command.
CONTEXT_SETTINGS = {"auto_envvar_prefix": "FLEETCTL", "help_option_names": ["-h", "--help"]}


@click.group(cls=FleetctlGroup, context_settings=CONTEXT_SETTINGS, invoke_without_command=True)
@click.option(
    "--endpoint",
    default=None,
    help="fleet's API [unix:///var/run/fleet.sock] or, with --driver=etcd, etcd URLs, "
    "comma-separated; every member is used [http://127.0.0.1:2379].",
)
@click.option("--driver", type=click.Choice(["API", "etcd"]), default="API", show_default=True)
@click.option("--request-timeout", type=float, default=3.0, show_default=True)
@click.option("--tunnel", default="", help="host[:port] to reach the cluster through over SSH.")
@click.option("--ca-file", default="", help="CA to check an https:// API with.")
@click.option("--cert-file", default="", help="Client certificate for an https:// API.")
@click.option("--key-file", default="", help="Client key for an https:// API.")
@click.option("--ssh-username", default="core", show_default=True)
@click.option("--ssh-timeout", type=float, default=10.0, show_default=True)
@click.option("--strict-host-key-checking", type=bool, default=True, show_default=True)
@click.option("--known-hosts-file", default="~/.fleetctl/known_hosts", show_default=True)
@click.option("--etcd-key-prefix", default=DEFAULT_PREFIX, show_default=True)
@click.option(
    "--etcd-username",
    default="",
    help="etcd user (--driver=etcd); the password comes from $FLEETCTL_ETCD_PASSWORD or "
    "--etcd-password-file, never from the command line.",
)
@click.option("--etcd-password-file", default="", help="File whose first line is the password.")
@click.option("--debug", is_flag=True, help="Print out more debug information to stderr.")
# fleet's deprecated flags: still accepted, with the effect they had (the TLS ones are the old
# names of --key-file, --cert-file and --ca-file; --experimental-api=false means --driver=etcd).
@click.option("--experimental-api", type=bool, default=True, help=DEPRECATED)
@click.option("--etcd-keyfile", default="", help=DEPRECATED)
@click.option("--etcd-certfile", default="", help=DEPRECATED)
@click.option("--etcd-cafile", default="", help=DEPRECATED)
@click.version_option(VERSION, "--version", "-v", message="fleetctl version %(version)s")
@click.pass_context
def main(
    ctx: click.Context,
    endpoint: str | None,
    driver: str,
    request_timeout: float,
    tunnel: str,
    ca_file: str,
    cert_file: str,
    key_file: str,
    ssh_username: str,
    ssh_timeout: float,
    strict_host_key_checking: bool,
    known_hosts_file: str,
    etcd_key_prefix: str,
    etcd_username: str,
    etcd_password_file: str,
    debug: bool,
    experimental_api: bool,
    etcd_keyfile: str,
    etcd_certfile: str,
    etcd_cafile: str,
) -> None:
    """fleetctl: control a Flotilla (fleet) cluster."""
    if ctx.invoked_subcommand is None:  # a bare `fleetctl`: fleet prints its help, exit 0
        click.echo(ctx.get_help())
        ctx.exit(0)
    if debug:
        enable_debug_log()
    ctx.obj = session_options(ctx.params)


def enable_debug_log() -> None:
    """--debug: fleetctl's own debug lines (each request, each skipped unit) on stderr, with
    timestamps as fleet's; libraries keep their own levels."""
    log = logging.getLogger("fleetctl")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG)


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"fleetctl version {VERSION}")


@main.command("help")
@click.pass_context
def help_command(ctx: click.Context) -> None:
    """Show this help (with the version, as fleet's does)."""
    click.echo(f"fleetctl version {VERSION}\n")
    click.echo(ctx.parent.get_help() if ctx.parent else "")


@main.command("fd-forward")
@click.argument("socket_path")
def fd_forward(socket_path: str) -> None:
    """Internal (fleet's tunnel): copy stdin and stdout to a unix socket."""
    from .remote import forward_stdio

    sys.exit(forward_stdio(socket_path))


@main.command(hidden=True)
def verify() -> None:
    """Deprecated in fleet: unit signing is gone."""
    click.echo(
        "WARNING: The signed/verified units feature is DEPRECATED and cannot be used.", err=True
    )
    sys.exit(2)
