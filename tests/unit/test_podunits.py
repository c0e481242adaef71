"""Container specs: every mistake names its line, units render as podman's own, arguments reach
the container exactly as written, and fleet's parser accepts every unit.

`systemd_argv` below turns an ExecStart value into argv the way systemd does (specifiers over
the whole line, then words with quotes and C escapes, then `$$` in each word), so escaping is
tested by the argv a process would get, not by the text of the unit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from fleetd.unitfile import UnitFile, parse_unit_file, requirements
from fleetd.unitname import parse_unit_name
from flotilla.manifest import ManifestError
from imagebuild.image_spec import DEFAULT_IMAGE_SPEC
from podunits.cli import main
from podunits.render import exec_argument, render_unit
from podunits.spec import (
    UNWRITABLE,
    ContainerSpec,
    FleetOptions,
    PortMapping,
    load_spec,
    normalize_image,
)
from podunits.store import known_images

EXAMPLES = Path(__file__).resolve().parents[2] / "flotilla/data/units/examples"
KNOWN = ("localhost/busybox:latest", "localhost/nginx:1.25")
MARK = "# <-"


# ---------------------------------------------------------------------------------------------
# systemd's view of an Exec line (systemd 252: config_parse_exec, extract_first_word with
# EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE, replace_env_argv), with fixed values for the specifiers.

SPECIFIER_VALUES = {"%": "%", "H": "node-1", "i": "7", "p": "web", "N": "web@7", "t": "/run"}
SPECIFIER_VALUES |= {"n": "web@7.service", "m": "0123456789abcdef0123456789abcdef"}
C_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "s": " "}
C_ESCAPES |= {"a": "\a", "b": "\b", "f": "\f", "v": "\v"}
HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def systemd_argv(value: str) -> list[str]:
    line = value.replace("\\\n", " ")  # a continuation joins lines with a space
    line = re.sub(r"%(.?)", lambda match: SPECIFIER_VALUES[match[1]], line, flags=re.DOTALL)
    return [_dollars(word) for word in _split_words(line)]


def _split_words(line: str) -> list[str]:
    words: list[str] = []
    index = 0
    while True:
        while index < len(line) and line[index] in " \t\n":
            index += 1
        if index == len(line):
            return words
        word, quote = [], None
        while index < len(line) and (quote or line[index] not in " \t\n"):
            character = line[index]
            if character == "\\":
                text, index = _c_unescape(line, index)
                word.append(text)
                continue
            if quote is None and character in "\"'":
                quote = character
            elif character == quote:
                quote = None
            else:
                word.append(character)
            index += 1
        assert quote is None, f"unbalanced quoting in {line!r}"
        words.append("".join(word))


def _c_unescape(line: str, index: int) -> tuple[str, int]:
    kind = line[index + 1]
    if kind in C_ESCAPES:
        return C_ESCAPES[kind], index + 2
    digits = HEX_DIGITS[kind]
    code = int(line[index + 2 : index + 2 + digits], 16)
    # systemd's \xNN is a raw byte: above 0x7f it would not be the character meant. Its \u
    # refuses NUL, surrogates and noncharacters.
    assert code and (kind != "x" or code < 0x80), line[index : index + 2 + digits]
    assert not UNWRITABLE.match(chr(code)), line[index : index + 2 + digits]
    return chr(code), index + 2 + digits


def _dollars(word: str) -> str:
    parts = word.split("$$")
    assert all("$" not in part for part in parts), f"systemd would expand a variable in {word!r}"
    return "$".join(parts)


# ---------------------------------------------------------------------------------------------
# Helpers


def write(directory: Path, text: str, name: str = "svc.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def marked_line(text: str) -> int:
    """The line holding the marker comment, or 1 for an error about the whole spec."""
    lines = [number for number, line in enumerate(text.splitlines(), 1) if MARK in line]
    return lines[0] if lines else 1


def rendered(tmp_path: Path, text: str, name: str = "svc.yaml") -> tuple[ContainerSpec, UnitFile]:
    spec = load_spec(write(tmp_path, text, name), KNOWN)
    unit = render_unit(spec)
    return spec, parse_unit_file(unit.text, unit.name)


def exec_start(unit: UnitFile) -> list[str]:
    (value,) = unit.values("Service", "ExecStart")
    return systemd_argv(value)


# ---------------------------------------------------------------------------------------------
# Validation: each mistake, with the key and the line it is reported at.

BAD_SPECS = [
    ("name: web\n", "(top level)", "missing key 'image'"),
    ("image: busybox\nimagee: x  # <-\n", "imagee", "unknown key"),
    ("image: BusyBox  # <-\n", "image", "lower-case"),
    ("image: localhost/redis:7  # <-\n", "image", "not in the machines' image store"),
    ("image: busybox\nports:\n  - '8080:70000'  # <-\n", "ports.0", "not a port number"),
    ("image: busybox\nports:\n  - '0'  # <-\n", "ports.0", "not a port number"),
    ("image: busybox\nports:\n  - 'http:80'  # <-\n", "ports.0", "not a port number"),
    ("image: busybox\nports:\n  - 22:22  # <-\n", "ports.0", "quoted string"),
    ("image: busybox\nports:\n  - '80/sctp'  # <-\n", "ports.0", "unknown protocol"),
    ("image: busybox\nports:\n  - {host: 1}  # <-\n", "ports.0", "missing key 'container'"),
    ("image: busybox\nports:\n  - {container: 1, hots: 2}  # <-\n", "ports.0.hots", "unknown"),
    ("image: busybox\nports:\n  - {container: 99999}  # <-\n", "ports.0.container", "1-65535"),
    ("image: busybox\nports: ['80', '80:8080']  # <-\n", "ports.1", "published twice"),
    ("image: busybox\nnetwork: host\nports:  # <-\n  - '80'\n", "ports", "network: host"),
    ("image: busybox\nenvironment:\n  1X: a  # <-\n", "environment.1X", "not a variable name"),
    ("image: busybox\nenvironment:\n  DEBUG: yes  # <-\n", "environment.DEBUG", "quote it"),
    ("image: busybox\nenvironment:\n  A: '%Q'  # <-\n", "environment.A", "'%Q' is not a spec"),
    ("image: busybox\nenvironment:\n  A: '100%'  # <-\n", "environment.A", "'%' is not a spec"),
    ("image: busybox\nenvironment: [A=1]  # <-\n", "environment", "must be a mapping"),
    ("image: busybox\nvolumes:\n  - 'data:/data'  # <-\n", "volumes.0", "must be absolute"),
    ("image: busybox\nvolumes:\n  - '/a:/b:ro,rw'  # <-\n", "volumes.0", "one choice"),
    ("image: busybox\nvolumes:\n  - '/a:/b:noexec'  # <-\n", "volumes.0", "unknown volume"),
    ("image: busybox\nvolumes: ['/a:/b', '/c:/b']  # <-\n", "volumes.1", "mounted twice"),
    ("image: busybox\nrestart: sometimes  # <-\n", "restart", "not one of"),
    ("image: busybox\nstop_timeout: -1  # <-\n", "stop_timeout", "0 or more"),
    ("image: busybox\nstop_timeout: yes  # <-\n", "stop_timeout", "must be a number"),
    ("image: busybox\nhostname: -web  # <-\n", "hostname", "not a host name"),
    ("image: busybox\nnetwork: macvlan  # <-\n", "network", "not one of"),
    ("image: busybox\nname: web@1  # <-\n", "name", "is an instance"),
    ("image: busybox\nname: web.service  # <-\n", "name", "without '.service'"),
    ("image: busybox\nname: web/x  # <-\n", "name", "invalid character '/' in unit name"),
    ("image: busybox\nname: _web  # <-\n", "name", "also names the container"),
    ("image: busybox\nname: web@\ntemplate: false  # <-\n", "template", "ends in '@'"),
    ("image: busybox\ncommand: sh -c 'oops  # <-\n", "command", "like a shell"),
    ("image: busybox\ncommand: {sh: x}  # <-\n", "command", "string or a list"),
    ("image: busybox\ncommand: [sh, true]  # <-\n", "command.1", "must be a string"),
    ('image: busybox\ndescription: "a\\nb"  # <-\n', "description", "one line"),
    ("image: busybox\nx-fleet:\n  machine: x  # <-\n", "x-fleet.machine", "unknown key"),
    ("image: busybox\nx-fleet:\n  machine_id: XYZ  # <-\n", "x-fleet.machine_id", "machine id"),
    ("image: busybox\nx-fleet:\n  global: 1  # <-\n", "x-fleet.global", "true or false"),
    (
        "image: busybox\nx-fleet:\n  machine_metadata: [region]  # <-\n",
        "x-fleet.machine_metadata.0",
        "character 7: nothing after the key 'region': expected an operator",
    ),
    (
        "image: busybox\nx-fleet:\n  machine_metadata: ['disk>=big']  # <-\n",
        "x-fleet.machine_metadata.0",
        "character 7",
    ),
    (
        "image: busybox\nx-fleet:\n  machine_metadata: {role: 'a b'}  # <-\n",
        "x-fleet.machine_metadata.role",
        "without spaces",
    ),
    ("image: busybox\nx-fleet:\n  conflicts: 'a b'  # <-\n", "x-fleet.conflicts", "spaces"),
    ("image: busybox\nx-fleet:\n  conflicts: ['%H*']  # <-\n", "x-fleet.conflicts.0", "%n %p"),
    ("image: busybox\nx-fleet:\n  replaces: '@old'  # <-\n", "x-fleet.replaces", "cannot start"),
    ('image: busybox\ncommand: ["a\\0b"]  # <-\n', "command", "a unit file cannot hold"),
    ('image: busybox\nenvironment:\n  A: "\\uFFFE"  # <-\n', "environment.A", "cannot hold"),
    # Combinations fleet refuses are found by fleet's own rules, on the rendered unit.
    (
        "image: busybox\nx-fleet:  # <-\n  machine_id: 0123abcd\n  conflicts: [web*]\n",
        "x-fleet",
        "MachineID cannot be used with Conflicts",
    ),
    (
        "image: busybox\nx-fleet:  # <-\n  global: true\n  machine_of: [db]\n",
        "x-fleet",
        "Global cannot be used with Peers",
    ),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD_SPECS)
def test_each_mistake_names_its_key_and_line(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as caught:
        render_unit(load_spec(path, KNOWN))
    assert str(caught.value).startswith(f"{path}:{marked_line(text)}: {key}: ")
    assert message in str(caught.value)


def test_an_unknown_image_error_lists_the_store_and_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"known: localhost/busybox:latest, localhost/nginx"):
        load_spec(write(tmp_path, "image: redis\n"), KNOWN)
    with pytest.raises(ManifestError, match=r"known: none\); bake it into the OS image"):
        load_spec(write(tmp_path, "image: redis\n"), [])


def test_no_image_list_means_no_image_check(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, "image: redis:7\n"), None).image == "localhost/redis:7"


def test_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "image: busybox\n", "hello.yaml"), KNOWN)
    assert (spec.name, spec.unit_name, spec.is_template) == ("hello", "hello.service", False)
    assert (spec.restart, spec.stop_timeout, spec.network, spec.hostname) == (
        "always",
        10,
        None,
        None,
    )
    assert spec.description == "hello: podman container from localhost/busybox:latest"
    assert (spec.command, spec.entrypoint, spec.fleet) == ((), None, FleetOptions())


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ("['8080:80']", (PortMapping(8080, 80, "tcp"),)),
        ("['53:5353/udp', '80']", (PortMapping(53, 5353, "udp"), PortMapping(80, 80, "tcp"))),
        ("[{container: 443}]", (PortMapping(443, 443, "tcp"),)),
        ("[{host: '8443', container: 443, protocol: udp}]", (PortMapping(8443, 443, "udp"),)),
        ("['80/tcp', '80/udp']", (PortMapping(80, 80, "tcp"), PortMapping(80, 80, "udp"))),
    ],
)
def test_port_forms(tmp_path: Path, ports: str, expected: tuple[PortMapping, ...]) -> None:
    assert load_spec(write(tmp_path, f"image: busybox\nports: {ports}\n"), KNOWN).ports == expected


def test_yaml_guesses_are_undone_or_refused(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "image: busybox\nrestart: no\nenvironment: {N: 4}\n"), KNOWN)
    assert (spec.restart, spec.environment) == ("no", (("N", "4"),))


@pytest.mark.parametrize(
    ("reference", "normal"),
    [
        ("busybox", "localhost/busybox:latest"),
        ("busybox:1.36", "localhost/busybox:1.36"),
        ("library/busybox", "localhost/library/busybox:latest"),
        ("localhost/busybox:latest", "localhost/busybox:latest"),
        ("docker.io/library/nginx", "docker.io/library/nginx:latest"),
        ("registry:5000/team/app:v1.2", "registry:5000/team/app:v1.2"),
        ("busybox@sha256:" + "a" * 64, "localhost/busybox@sha256:" + "a" * 64),
        ("busybox:1@sha256:" + "b" * 64, "localhost/busybox:1@sha256:" + "b" * 64),
    ],
)
def test_image_names_are_fully_qualified(reference: str, normal: str) -> None:
    assert normalize_image(reference) == normal


@pytest.mark.parametrize("reference", ["", "Busybox", "busybox:", "a//b", "busybox@md5:1", "-x"])
def test_bad_image_names(reference: str) -> None:
    with pytest.raises(ValueError):
        normalize_image(reference)


# ---------------------------------------------------------------------------------------------
# Rendering: podman's conventions, key lines, fleet's parser.

HELLO_ARGV = [
    "/usr/bin/podman", "run", "--cidfile=/run/web@7.service.ctr-id", "--cgroups=no-conmon",
    "--rm", "--sdnotify=conmon", "--replace", "-d", "--pull=never",
    "--label", "org.flotilla.unit=web@7.service", "--name", "hello-web",
    "--publish", "8080:80/tcp", "--env", "NODE=node-1", "localhost/busybox:latest", "sh", "-c",
    'mkdir -p /www && echo "hello from $NODE" > /www/index.html'
    " && exec httpd -f -v -p 80 -h /www",
]  # fmt: skip


def test_the_demo_renders_to_podmans_own_unit() -> None:
    unit = render_unit(load_spec(EXAMPLES / "hello-web.yaml", KNOWN))
    parsed = parse_unit_file(unit.text, unit.name)
    assert unit.name == "hello-web.service"
    # The shell in the container, not systemd, expands $NODE; systemd fills in %H.
    assert exec_start(parsed) == HELLO_ARGV
    assert 'echo \\"hello from $$NODE\\" >' in unit.text
    expected = {
        ("Unit", "Wants"): ["network-online.target"],
        ("Unit", "After"): ["network-online.target flotilla-container-cleanup.service"],
        ("Service", "Environment"): ["PODMAN_SYSTEMD_UNIT=%n"],
        ("Service", "Type"): ["notify"],
        ("Service", "NotifyAccess"): ["all"],
        ("Service", "KillMode"): ["mixed"],
        ("Service", "Restart"): ["always"],
        ("Service", "TimeoutStopSec"): ["70"],
        ("Service", "ExecStop"): ["/usr/bin/podman stop --ignore -t 10 --cidfile=%t/%n.ctr-id"],
        ("Service", "ExecStopPost"): [
            "/usr/bin/podman rm -f --ignore -t 10 --cidfile=%t/%n.ctr-id"
        ],
    }
    assert {key: parsed.values(*key) for key in expected} == expected
    assert not parsed.has_section("X-Fleet") and not parsed.has_section("Install")


def test_a_template_names_each_container_after_its_instance() -> None:
    unit = render_unit(load_spec(EXAMPLES / "web@.yaml", KNOWN))
    parsed = parse_unit_file(unit.text, unit.name)
    assert unit.name == "web@.service"
    argv = exec_start(parsed)
    assert argv[argv.index("--name") + 1] == "web-7"  # %p-%i of web@7.service
    assert "INSTANCE=7" in argv
    assert parsed.values("X-Fleet", "Conflicts") == ["web@*"]
    # Two instances of the template keep apart, as fleet's scheduler reads it.
    one = requirements(parsed, parse_unit_name("web@1.service"))
    two = requirements(parsed, parse_unit_name("web@2.service"))
    assert one.conflicts_with("web@2.service", two)


def test_every_option_reaches_podman(tmp_path: Path) -> None:
    text = """\
name: app
image: nginx:1.25
entrypoint: [/docker-entrypoint.sh, --quiet]
command: nginx -g 'daemon off;'
ports: ["8443:443"]
volumes: ["/srv/conf:/etc/nginx:ro,Z", "/srv/my data:/data"]
environment: {MODE: prod}
hostname: app.example
network: bridge
stop_timeout: 30
restart: on-failure
"""
    _, unit = rendered(tmp_path, text)
    argv = exec_start(unit)
    assert argv[argv.index("--pull=never") + 1 : argv.index("--name")] == [
        "--label",
        "org.flotilla.unit=web@7.service",
    ]
    tail = argv[argv.index("--name") :]
    assert tail == [
        "--name", "app", "--hostname", "app.example", "--network", "bridge",
        "--publish", "8443:443/tcp", "--volume", "/srv/conf:/etc/nginx:ro,Z",
        "--volume", "/srv/my data:/data", "--env", "MODE=prod",
        "--entrypoint", '["/docker-entrypoint.sh", "--quiet"]',
        "localhost/nginx:1.25", "nginx", "-g", "daemon off;",
    ]  # fmt: skip
    assert unit.values("Service", "Restart") == ["on-failure"]
    assert unit.values("Service", "TimeoutStopSec") == ["90"]
    assert "-t 30" in unit.values("Service", "ExecStop")[0]


@pytest.mark.parametrize(
    ("entrypoint", "argument"),
    [("/bin/sh", "/bin/sh"), ("[]", ""), ("''", ""), ("[/bin/sh, -e]", '["/bin/sh", "-e"]')],
)
def test_entrypoint_forms(tmp_path: Path, entrypoint: str, argument: str) -> None:
    _, unit = rendered(tmp_path, f"image: busybox\nentrypoint: {entrypoint}\n")
    argv = exec_start(unit)
    assert argv[argv.index("--entrypoint") + 1] == argument


def test_x_fleet_options_are_read_back_by_fleet(tmp_path: Path) -> None:
    text = """\
name: api
image: busybox
x-fleet:
  machine_of: db
  machine_metadata: {region: [us-east, us-west], disk: ssd}
  conflicts: ["%p-canary*", "legacy-api*"]
"""
    spec, unit = rendered(tmp_path, text)
    found = requirements(unit, parse_unit_name(spec.unit_name))
    assert found.machine_of == ("db.service",)
    assert [str(clause) for clause in found.metadata] == ["disk=ssd", "region=us-east|us-west"]
    assert found.conflicts == ("api-canary*", "legacy-api*")


@pytest.mark.parametrize(
    ("fleet", "option", "values"),
    [
        ("machine_id: 0123456789abcdef0123456789abcdef", "MachineID", ["0123456789abcdef" * 2]),
        ("global: true", "Global", ["true"]),
        ("replaces: [old-api, old@1.service]", "Replaces", ["old-api.service", "old@1.service"]),
        ("machine_metadata: [role=web, role=api]", "MachineMetadata", ["role=web", "role=api"]),
        (
            "machine_metadata: ['disk>=100', 'region!=east', 'cores<8']",
            "MachineMetadata",
            ["disk>=100", "region!=east", "cores<8"],
        ),
    ],
)
def test_x_fleet_option_lines(tmp_path: Path, fleet: str, option: str, values: list[str]) -> None:
    _, unit = rendered(tmp_path, f"image: busybox\nx-fleet:\n  {fleet}\n")
    assert unit.values("X-Fleet", option) == values


# ---------------------------------------------------------------------------------------------
# Escaping: what the spec says is what the process gets.

ESCAPES = [
    ("dollar", "echo $HOME ${PATH} $$", "echo $HOME ${PATH} $$"),
    ("percent", "100% of %H and %%", "100% of %H and %%"),
    ("quotes", """say "hi" and 'bye'""", """say "hi" and 'bye'"""),
    ("spaces", "  two  spaces  ", "  two  spaces  "),
    ("backslash", "C:\\path\\ and \\n", "C:\\path\\ and \\n"),
    ("semicolon", ";", ";"),
    ("newline", "line one\nline two\ttab\r", "line one\nline two\ttab\r"),
    ("unicode", "héllo \u2013 世界 \u0085\u2028\xa0", "héllo \u2013 世界 \u0085\u2028\xa0"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(
    ("argument", "expected"), [case[1:] for case in ESCAPES], ids=[c[0] for c in ESCAPES]
)
def test_command_arguments_arrive_as_written(tmp_path: Path, argument: str, expected: str) -> None:
    path = write(tmp_path, "image: busybox\n")
    spec = load_spec(path, KNOWN)
    spec = ContainerSpec(**{**vars(spec), "command": ("sh", "-c", argument)})
    unit = render_unit(spec)
    assert exec_start(parse_unit_file(unit.text))[-3:] == ["sh", "-c", expected]


def test_environment_values_take_specifiers_and_nothing_else(tmp_path: Path) -> None:
    text = "image: busybox\nenvironment:\n  A: '%H-%i'\n  B: '50%% $USER \"q\" x y'\n"
    _, unit = rendered(tmp_path, text)
    argv = exec_start(unit)
    assert "A=node-1-7" in argv
    assert 'B=50% $USER "q" x y' in argv


def test_values_outside_exec_lines_are_literal_too(tmp_path: Path) -> None:
    _, unit = rendered(tmp_path, "image: busybox\ndescription: 100% uptime for %H\n")
    assert unit.values("Unit", "Description") == ["100%% uptime for %%H"]


@given(st.lists(st.text(max_size=40).filter(lambda word: not UNWRITABLE.search(word)), max_size=5))
def test_any_arguments_survive_fleet_and_systemd(words: list[str]) -> None:
    line = " \\\n    ".join(["/bin/x", *(exec_argument(word) for word in words)])
    unit = parse_unit_file(f"[Service]\nExecStart={line}\n")
    assert exec_start(unit) == ["/bin/x", *words]


def test_an_argument_too_long_for_a_unit_line_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, f"image: busybox\ncommand: [echo, {'x' * 3000}]\n")
    with pytest.raises(ManifestError, match=r"svc.yaml:1: \(top level\): the rendered unit is"):
        render_unit(load_spec(path, KNOWN))


# ---------------------------------------------------------------------------------------------
# Every example, and systemd's own checker where the host has it.


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_renders_and_fleet_accepts_it(example: Path) -> None:
    spec = load_spec(example, known_images(DEFAULT_IMAGE_SPEC))
    unit = render_unit(spec)
    parsed = parse_unit_file(unit.text, unit.name)
    requirements(parsed, parse_unit_name(unit.name))
    assert exec_start(parsed)[:2] == ["/usr/bin/podman", "run"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_analyze_verify_accepts_the_examples(tmp_path: Path) -> None:
    names = []
    for example in sorted(EXAMPLES.glob("*.yaml")):
        unit = render_unit(load_spec(example, None))
        # The host may lack podman; verify checks that the command exists.
        (tmp_path / unit.name).write_text(unit.text.replace("/usr/bin/podman", "/bin/echo"))
        names.append(f"./{unit.name.replace('@.', '@1.')}")
    result = subprocess.run(
        ["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# ---------------------------------------------------------------------------------------------
# The image store lists


def test_image_lists_from_a_manifest_and_from_text(tmp_path: Path) -> None:
    yaml_list = write(tmp_path, "container_images:\n  - name: localhost/a:1\n  - b\n", "i.yaml")
    text_list = write(tmp_path, "# baked\nlocalhost/a:1\n\nb  # short\n", "i.txt")
    assert (
        known_images(yaml_list)
        == known_images(text_list)
        == ("localhost/a:1", "localhost/b:latest")
    )
    assert "localhost/busybox:latest" in known_images(DEFAULT_IMAGE_SPEC)


def test_image_list_mistakes_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"i.yaml:1: \(top level\): no container_images"):
        known_images(write(tmp_path, "name: x\n", "i.yaml"))
    with pytest.raises(ManifestError, match=r"i.yaml:3: container_images.1.name: "):
        known_images(write(tmp_path, "container_images:\n  - name: a\n  - name: B\n", "i.yaml"))
    with pytest.raises(ManifestError, match=r"i.txt:2: "):
        known_images(write(tmp_path, "a\nNOPE\n", "i.txt"))


# ---------------------------------------------------------------------------------------------
# The CLI

GOOD = "image: busybox\nports: ['8080:80']\n"
BAD = "image: busybox\nports:\n  - '8080:99999'\n"


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write(tmp_path, "localhost/busybox:latest\n", "images.txt")


def test_one_bad_spec_means_no_file_is_written(tmp_path: Path, images: Path) -> None:
    good, bad = write(tmp_path, GOOD, "good.yaml"), write(tmp_path, BAD, "bad.yaml")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "render", str(good), str(bad), "-o", str(out), "--images-from", str(images)
    )
    assert code == 1 and stdout == ""
    assert stderr == f"{bad}:3: ports.0: '99999' is not a port number (1-65535)\n"
    assert not out.exists()


def test_every_bad_spec_is_reported(tmp_path: Path, images: Path) -> None:
    one, two = write(tmp_path, BAD, "one.yaml"), write(tmp_path, "image: redis\n", "two.yaml")
    code, _, stderr = run_cli("check", str(one), str(two), "--images-from", str(images))
    assert code == 1
    assert [line.split(":")[0] for line in stderr.splitlines()] == [str(one), str(two)]


def test_render_writes_each_unit_and_prints_its_path(tmp_path: Path, images: Path) -> None:
    specs = [write(tmp_path, GOOD, "a.yaml"), write(tmp_path, "image: busybox\n", "b@.yaml")]
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        "render", *map(str, specs), "-o", str(out), "--images-from", str(images)
    )
    assert code == 0
    assert stdout.splitlines() == [str(out / "a.service"), str(out / "b@.service")]
    assert sorted(path.name for path in out.iterdir()) == ["a.service", "b@.service"]
    parse_unit_file((out / "a.service").read_text())


def test_render_one_spec_to_stdout(tmp_path: Path, images: Path) -> None:
    code, stdout, _ = run_cli("render", str(write(tmp_path, GOOD)), "--images-from", str(images))
    assert code == 0 and "--publish 8080:80/tcp" in stdout
    code, _, stderr = run_cli(
        "render", str(write(tmp_path, GOOD)), str(write(tmp_path, GOOD, "b.yaml"))
    )
    assert code == 2 and "-o DIR" in stderr


def test_two_specs_for_one_unit_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path, "name: web\nimage: busybox\n", "a.yaml")
    second = write(tmp_path, "name: web  # again\nimage: busybox\n", "b.yaml")
    code, _, stderr = run_cli("check", str(first), str(second), "--no-image-check")
    assert code == 1
    assert stderr == f"{second}:1: name: web.service is also rendered from {first}\n"


def test_image_check_options(tmp_path: Path, images: Path) -> None:
    spec = str(write(tmp_path, "image: redis\n"))
    assert run_cli("check", spec, "--images-from", str(images))[0] == 1
    assert run_cli("check", spec, "--no-image-check") == (0, f"{spec}: svc.service ok\n", "")
    assert run_cli("check", spec, "--no-image-check", "--images-from", str(images))[0] == 2
