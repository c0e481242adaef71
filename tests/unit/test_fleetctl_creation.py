"""fleetctl's pure decisions: lazy creation's order and --replace (creation.py), the current
state of a failed unit (status.py), and the root's fleet-style flags (cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.client import ClientError
from fleetd.fleetctl.cli import main, pflag_booleans
from fleetd.fleetctl.creation import arguments_of, plan_creation
from fleetd.model import DesiredState, JobRecord, UnitState, UnitStatus
from fleetd.status import current_state
from fleetd.unitfile import parse_unit_file

REGISTRY_TEMPLATE = "[Unit]\nDescription=registry\n\n[Service]\nExecStart=/bin/sleep %i\n"
LOCAL_TEMPLATE = "[Unit]\nDescription=local\n\n[Service]\nExecStart=/bin/sleep %i\n"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


def job(name: str, text: str, desired: DesiredState = DesiredState.INACTIVE) -> JobRecord:
    return JobRecord(name, parse_unit_file(text, name).hash, desired)


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda path: files.get(str(path))


def test_an_instance_is_made_from_the_registrys_template_before_the_local_one() -> None:
    jobs = {"tpl@.service": job("tpl@.service", REGISTRY_TEMPLATE)}
    plan = plan_creation(
        arguments_of(["tpl@1"]),
        jobs,
        {"tpl@.service": REGISTRY_TEMPLATE},
        "start",
        False,
        reader({"tpl@.service": LOCAL_TEMPLATE}),
    )
    assert plan.new["tpl@1.service"].values("Unit", "Description") == ["registry"]


def test_the_local_template_is_used_when_the_registry_has_none() -> None:
    plan = plan_creation(
        arguments_of(["units/tpl@1.service"]),
        {},
        {},
        "start",
        False,
        reader({"units/tpl@.service": LOCAL_TEMPLATE}),
    )
    assert plan.new["tpl@1.service"].values("Unit", "Description") == ["local"]


def test_a_unit_in_the_registry_is_used_as_it_is_with_a_warning() -> None:
    jobs = {"web.service": job("web.service", SLEEPER)}
    other = "[Service]\nExecStart=/bin/sleep 5\n"
    plan = plan_creation(
        arguments_of(["web"]), jobs, {}, "start", False, reader({"web.service": other})
    )
    assert (plan.new, plan.replaced) == ({}, {})
    assert plan.warnings == [
        "WARNING: Unit web.service in registry differs from local unit file web.service."
        " Add --replace to override."
    ]


@pytest.mark.parametrize(
    ("command", "desired", "replaced"),
    [
        ("submit", DesiredState.INACTIVE, True),
        ("submit", DesiredState.LOADED, False),
        ("load", DesiredState.LAUNCHED, False),
        ("start", DesiredState.LAUNCHED, True),
    ],
)
def test_replace_only_in_the_states_fleet_allows(
    command: str, desired: DesiredState, replaced: bool
) -> None:
    jobs = {"web.service": job("web.service", SLEEPER, desired)}
    other = "[Service]\nExecStart=/bin/sleep 5\n"
    plan = plan_creation(
        arguments_of(["web.service"]), jobs, {}, command, True, reader({"web.service": other})
    )
    assert ("web.service" in plan.replaced) == replaced
    assert bool(plan.warnings) != replaced


def test_replacing_the_same_file_is_nothing_to_do() -> None:
    jobs = {"web.service": job("web.service", SLEEPER)}
    plan = plan_creation(
        arguments_of(["web.service"]), jobs, {}, "start", True, reader({"web.service": SLEEPER})
    )
    assert plan.replaced == {}
    assert plan.notes == ["Found same Unit(web.service) in Registry, nothing to do"]


def test_nothing_found_is_fleets_error() -> None:
    with pytest.raises(ClientError, match=r"unable to find Unit\(nosuch.service\)"):
        plan_creation(arguments_of(["nosuch"]), {}, {}, "start", False, reader({}))


def test_a_bad_unit_is_refused_before_anything_is_created() -> None:
    files = {"good.service": SLEEPER, "bad.service": "[Service\n"}
    with pytest.raises(ClientError, match=r"bad\.service:1"):
        plan_creation(arguments_of(["good", "bad"]), {}, {}, "start", False, reader(files))


def status(active: str, desired: DesiredState) -> UnitStatus:
    return UnitStatus("a.service", "h", desired, "m1", {"m1": UnitState("loaded", active, active)})


def test_a_launched_unit_that_failed_stays_launched() -> None:
    assert current_state(status("failed", DesiredState.LAUNCHED), False) == "launched"
    assert current_state(status("failed", DesiredState.LOADED), False) == "loaded"
    assert current_state(status("inactive", DesiredState.LAUNCHED), False) == "loaded"
    assert current_state(status("active", DesiredState.LAUNCHED), False) == "launched"


def test_bare_boolean_root_flags_mean_true_and_never_take_the_command() -> None:
    commands = {"list-units": None}
    assert pflag_booleans(["--experimental-api", "list-units", "--experimental-api"], commands) == [
        "--experimental-api=true",
        "list-units",
        "--experimental-api",
    ]


def root_options(args: list[str]) -> dict[str, object]:
    context = main.make_context("fleetctl", [*args, "version"])
    main.invoke(context)
    return context.obj


def test_deprecated_flags_have_their_old_effect(capsys: pytest.CaptureFixture[str]) -> None:
    old = root_options(["--etcd-cafile", "ca", "--etcd-certfile", "cert", "--etcd-keyfile", "key"])
    assert old["tls"] == ("ca", "cert", "key")
    both = root_options(["--etcd-cafile", "old", "--ca-file", "new"])
    assert both["tls"][0] == "new"  # type: ignore[index]
    assert root_options(["--experimental-api=false"])["driver"] == "etcd"
    assert root_options(["--experimental-api", "--driver", "API"])["driver"] == "API"
    assert root_options(["--debug"])["driver"] == "API"
    capsys.readouterr()


def test_sign_is_refused_with_fleets_exit() -> None:
    from click.testing import CliRunner

    for command in ("submit", "load", "start"):
        result = CliRunner().invoke(main, [command, "--sign", "a.service"])
        assert result.exit_code == 2
        assert "signed/verified units feature is DEPRECATED" in result.output


def test_arguments_keep_their_directory_and_get_the_suffix() -> None:
    assert [(a.name, a.path) for a in arguments_of(["units/web", "web", "x.socket"])] == [
        ("web.service", Path("units/web.service")),
        ("x.socket", Path("x.socket")),
    ]
