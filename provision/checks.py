"""The gate every rendered config passes before a machine boots with it."""

from __future__ import annotations

from .cloudconfig import parse_cloud_config
from .ignition import validate_ignition
from .render import Rendered


class ConfigRejected(ValueError):
    """A rendered config failed its check; the message names the template and the findings."""


def check_config(config: Rendered, provision: str, node: str) -> None:
    if provision == "ignition":
        validate_ignition(config, node)  # raises IgnitionRejected, a ValueError too
        return
    findings = parse_cloud_config(config.text).findings
    if findings:  # warnings too: an unknown key in our own template is a bug in it
        report = "\n".join(str(finding) for finding in findings)
        raise ConfigRejected(f"{config.template} (rendered for {node}):\n{report}")
