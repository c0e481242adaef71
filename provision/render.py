"""Node configs from the jinja2 templates in flotilla/data/cloud-config/ (one per role), rendered
strictly.

A template that uses a value it was not given fails with the template's name and line; an
Ignition template renders YAML (easier to read and write than JSON) that becomes spec-3.3.0
JSON. Checking with the real validator is provision/ignition.py's job.
"""

from __future__ import annotations

import json
import traceback
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from flotilla.resources import data_path

TEMPLATES = data_path("cloud-config")
IGNITION_SUFFIX = ".ign.yaml.j2"
CLOUD_CONFIG_SUFFIX = ".cloud-config.j2"


class RenderError(ValueError):
    """A template could not be rendered; the message names the template and line."""


@dataclass(frozen=True)
class Rendered:
    template: Path
    text: str  # Ignition JSON, or a #cloud-config document


def data_url(text: str) -> str:
    """An RFC 2397 data URL, as Ignition's file contents take it."""
    return "data:," + urllib.parse.quote(text, safe="")


def environment(directory: Path = TEMPLATES) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["data_url"] = data_url
    return env


def render_template(name: str, values: dict[str, object], directory: Path = TEMPLATES) -> str:
    path = directory / name
    if not path.is_file():
        roles = sorted(p.name for p in directory.glob("*.j2"))
        raise RenderError(f"{path}: no such template (templates: {', '.join(roles)})")
    try:
        return environment(directory).get_template(name).render(values)
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(f"{path}:{error.lineno}: {error.message}") from error
    except jinja2.UndefinedError as error:
        raise RenderError(f"{path}:{template_line(error, path)}: {error.message}") from error


def template_line(error: BaseException, path: Path) -> int | str:
    """jinja2 rewrites tracebacks so the template's own frame carries its line."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == str(path)]
    return frames[-1].lineno if frames else "?"


def render_ignition(role: str, values: dict[str, object], directory: Path = TEMPLATES) -> Rendered:
    name = role + IGNITION_SUFFIX
    text = render_template(name, values, directory)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else "?"
        raise RenderError(f"{directory / name}: rendered YAML line {line}: {error}") from error
    return Rendered(directory / name, json.dumps(config, indent=2) + "\n")


def render_cloud_config(
    role: str, values: dict[str, object], directory: Path = TEMPLATES
) -> Rendered:
    name = role + CLOUD_CONFIG_SUFFIX
    return Rendered(directory / name, render_template(name, values, directory))
