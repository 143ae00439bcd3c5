"""Reading deploy/ as its consumers do: the Dockerfile through a real parser, the YAML documents,
the systemd unit's keys; and the settings each file gives `mirror serve`, loaded by the mirror's
own `load_settings`."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from mirror.config import Settings, load_settings
from mirror.config.options import OPTIONS

DEPLOY = Path(__file__).parents[2] / "deploy"
REPOSITORY = DEPLOY.parent
# Every variable `mirror serve` reads: one per option, and the settings file.
MIRROR_VARIABLES = frozenset({o.env_var for o in OPTIONS if o.env} | {"MIRROR_CONFIG"})


@dataclass(frozen=True)
class Instruction:
    name: str
    value: str


class Dockerfile:
    """deploy/Dockerfile as dockerfile-parse reads it."""

    def __init__(self, path: Path = DEPLOY / "Dockerfile") -> None:
        self.parser = DockerfileParser(str(path))
        self.instructions = [
            Instruction(i["instruction"], i["value"])
            for i in self.parser.structure
            if i["instruction"] != "COMMENT"
        ]

    def all(self, name: str) -> list[str]:
        return [i.value for i in self.instructions if i.name == name]

    def last(self, name: str) -> str:
        values = self.all(name)
        assert values, f"no {name} in the Dockerfile"
        return values[-1]

    @property
    def env(self) -> dict[str, str]:
        """The image's environment, as a container starts with it."""
        return dict(self.parser.envs)

    def exec_form(self, name: str) -> list[str]:
        """An instruction's command in exec (JSON) form: no shell between Docker and it."""
        command = json.loads(self.last(name))
        assert isinstance(command, list) and all(isinstance(a, str) for a in command), command
        return command

    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """HEALTHCHECK's options and its exec-form command."""
        options, _, command = self.last("HEALTHCHECK").partition(" CMD ")
        flags = dict(option.removeprefix("--").split("=", 1) for option in shlex.split(options))
        parsed = json.loads(command)
        assert isinstance(parsed, list), command
        return flags, parsed


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kubernetes_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object under deploy/kubernetes, by (kind, name)."""
    objects = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml_documents(path):
            objects[doc["kind"], doc["metadata"]["name"]] = doc
    return objects


def unit_keys(path: Path, section: str = "Service") -> dict[str, list[str]]:
    """One section of a systemd unit: each key's values in order (keys may repeat)."""
    keys: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def assert_known_variables(env: Mapping[str, str]) -> None:
    """Every MIRROR_* variable a file sets is one `mirror serve` reads: the loader ignores
    others, so a misspelt one would be silently without effect."""
    unknown = sorted(k for k in env if k.startswith("MIRROR_") and k not in MIRROR_VARIABLES)
    assert not unknown, f"not settings of mirror serve: {unknown}"


def settings_in(env: Mapping[str, str], mounts: Mapping[str, Path]) -> Settings:
    """The settings `mirror serve` starts with in a container whose environment is `env` and
    where each path of `mounts` shows the given file (so MIRROR_CONFIG is found here)."""
    assert_known_variables(env)
    environ = dict(env)
    if "MIRROR_CONFIG" in environ:
        environ["MIRROR_CONFIG"] = str(mounts[environ["MIRROR_CONFIG"]])
    return load_settings(None, {}, environ=environ)
