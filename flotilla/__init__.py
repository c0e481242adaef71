"""Host-side plumbing shared by the tools: running commands, timing steps, finding Flotilla's
own files (resources.py, the data under data/), talking to systemd as a service."""

# The version of the whole project: pyproject.toml and every tool's --version read it here.
__version__ = "0.1.0"
