"""Which apiserver skiffctl talks to, and in which namespace by default.

In order: ``--server``; ``$SKIFF_SERVER``; the config file's ``server:`` (YAML,
``~/.skiff/config`` or ``$SKIFF_CONFIG``); else ``127.0.0.1:6443``. Any of them may
list several comma-separated addresses; the client fails over between them. The
config file may also name a default ``namespace:``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skiff.client.client import DEFAULT_SERVER, parse_addresses

CONFIG_ENV = "SKIFF_CONFIG"
SERVER_ENV = "SKIFF_SERVER"
DEFAULT_CONFIG = Path("~/.skiff/config")


class ConfigError(ValueError):
    """A config file that cannot be read or does not say what it should."""


@dataclass(frozen=True)
class Settings:
    """Where to connect and the namespace used when ``-n`` is not given."""

    server: tuple[str, ...]
    namespace: str = "default"


def config_path(env: Mapping[str, str]) -> Path:
    """The config file: ``$SKIFF_CONFIG`` or ``~/.skiff/config``."""
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def read_config(path: Path) -> dict[str, Any]:
    """The config file's mapping; {} when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with server: host:port")
    return data


def resolve(server_flag: str | None, namespace_flag: str | None, *,
            env: Mapping[str, str] | None = None) -> Settings:
    """The settings a command runs with, flags first, then environment, then the file."""
    env = os.environ if env is None else env
    file: dict[str, Any] = {}
    if not server_flag or not namespace_flag:
        file = read_config(config_path(env))
    server = server_flag or env.get(SERVER_ENV) or str(file.get("server") or "") \
        or DEFAULT_SERVER
    namespace = namespace_flag or str(file.get("namespace") or "") or "default"
    try:
        return Settings(server=parse_addresses(server), namespace=namespace)
    except ValueError as e:
        raise ConfigError(str(e)) from None
