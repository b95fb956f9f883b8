"""setup.cfg's version floors are the versions CI tests: each equals its pin in constraints/cpu.txt."""

from __future__ import annotations

import configparser
import os
import re
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)$")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "cpu.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def _floors() -> list[tuple[str, str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    floors = []
    for line in filter(None, (line.strip() for line in lines)):
        match = REQUIREMENT.match(line)
        assert match, f"setup.cfg requirement {line!r} must be 'name>=version' (a tested floor)"
        floors.append((match.group(1).lower(), match.group(3)))
    return floors


def test_every_floor_is_the_pinned_tested_version():
    pins = _pins()
    floors = _floors()
    assert {name for name, _ in floors} >= {"torch", "lightning", "transformers"}
    for name, floor in floors:
        assert name in pins, f"{name} has a floor in setup.cfg but no pin in constraints/cpu.txt"
        assert floor == pins[name], f"{name}: setup.cfg floor {floor} != tested pin {pins[name]}"


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI installs with constraints/cpu.txt")
@pytest.mark.parametrize("name", sorted(_pins()))
def test_installed_versions_are_the_pins(name):
    """CI installs with the constraints file, so the suite runs on exactly the floors."""
    installed = metadata.version(name).split("+")[0]
    assert installed == _pins()[name]
