"""fleetctl's table format is fleet's: Go tabwriter with tab padding (golden outputs)."""

from __future__ import annotations

import pytest

from fleetd.fleetctl.tables import FieldError, machine_legend, select_fields, table, tabwrite


def test_columns_are_padded_with_tabs_to_multiples_of_eight() -> None:
    text = tabwrite([["UNIT", "HASH", "DSTATE"], ["hello.service", "e55c0ae", "launched"]])
    # "hello.service" is 13 wide: +1 padding = 14 -> 16, two tabs after it, one after "UNIT".
    assert text == "UNIT\t\tHASH\tDSTATE\nhello.service\te55c0ae\tlaunched\n"


def test_golden_list_unit_files() -> None:
    records = [
        {
            "unit": "hello.service",
            "hash": "e55c0ae",
            "dstate": "launched",
            "state": "launched",
            "target": "113f16a7.../172.17.8.103",
        },
        {
            "unit": "global.service",
            "hash": "0c7a1b2",
            "dstate": "launched",
            "state": "",
            "target": "global",
        },
    ]
    fields = ["unit", "hash", "dstate", "state", "target"]
    assert table(records, fields, legend=True) == (
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\n"
        "hello.service\te55c0ae\tlaunched\tlaunched\t113f16a7.../172.17.8.103\n"
        "global.service\t0c7a1b2\tlaunched\t-\t\tglobal\n"
    )


def test_no_legend_drops_the_header() -> None:
    assert table([{"machine": "113f16a7..."}], ["machine"], legend=False) == "113f16a7...\n"


def test_machine_legend() -> None:
    machine_id = "113f16a7" + "0" * 24
    assert machine_legend(machine_id, "172.17.8.103", full=False) == "113f16a7.../172.17.8.103"
    assert machine_legend(machine_id, "", full=True) == machine_id


@pytest.mark.parametrize(
    ("spec", "message"),
    [("", "Must define output format"), ("unit,colour", 'Invalid key in output format: "colour"')],
)
def test_bad_fields(spec: str, message: str) -> None:
    with pytest.raises(FieldError, match=message):
        select_fields(spec, ["unit", "hash"])
