"""What `imagebuild build` prints about the image it made: a short summary for people, or the
report itself as JSON (`--json`) (pure; write_report in image.py writes the file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .layout import format_size


def report_document(text: str, path: Path) -> dict[str, Any]:
    """The report file's JSON object; ValueError, naming the file, if it is not one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON report: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a JSON report: a {type(document).__name__}, not an object")
    return document


def report_json(document: dict[str, Any]) -> str:
    """`imagebuild build --json`: the report, as written to NAME.report.json, one document."""
    return json.dumps(document, indent=2)


def report_lines(document: dict[str, Any], out: Path) -> list[str]:
    """The default: what was built, where, and how big."""
    name, sizes = document["name"], document["sizes"]
    usr = sizes["usr_filesystem_bytes"]
    return [
        f"{name} {document['version']}: kernel {document['kernel']}, "
        f"{document['packages']} packages, built in {document['build_seconds']}s",
        f"  {out / f'{name}.qcow2'}  {format_size(sizes['qcow2_bytes'])}",
        f"  {out / f'{name}.raw'}  {format_size(sizes['disk_bytes'])} disk,"
        f" {format_size(sizes['raw_allocated_bytes'])} allocated",
        f"  /usr  {format_size(usr)} erofs of {format_size(sizes['usr_content_bytes'])},"
        f" in a {format_size(sizes['usr_partition_bytes'])} partition",
        f"  report  {out / f'{name}.report.json'} (or `imagebuild build --json`)",
    ]
