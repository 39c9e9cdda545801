"""requirements/system-ros.txt, used by scripts/setup_env.sh instead of base.txt's pins on a sourced ROS 2.

The pytest range is the one Jazzy's launch_testing / launch_pytest 3.4 load with (checked against their
sources: pytest 9 rejects launch_testing's `path` hook argument, pytest 8.4 removed the
`_pytestfixturefunction` attribute launch_pytest reads); these tests keep the files and the installed
pytest plugins consistent with it.
"""

import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"
UBUNTU_NOBLE_PYTEST = "7.4.4"  # python3-pytest of Ubuntu 24.04, the platform pytest of a Jazzy install
NEWEST_IN_RANGE = "8.3.5"  # what pip installs into the venv when no platform pytest is in range


def requirements(name: str) -> list[Requirement]:
    lines = (REQUIREMENTS / name).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_every_system_ros_range_replaces_one_exact_base_pin():
    # setup_env.sh drops the base.txt lines that start with `name==` for each name system-ros.txt lists; a
    # name pinned twice, spelled differently or not with `==` would reach pip twice and conflict.
    base_lines = (REQUIREMENTS / "base.txt").read_text().splitlines()
    base = requirements("base.txt")
    for replacement in requirements("system-ros.txt"):
        named = [r for r in base if canonicalize_name(r.name) == canonicalize_name(replacement.name)]
        dropped = [line for line in base_lines if line.startswith(f"{replacement.name}==")]
        assert len(named) == 1 and len(dropped) == 1, (replacement.name, named, dropped)


def test_system_ros_pytest_range_is_one_launch_testing_and_launch_pytest_load_with():
    (pytest_range,) = [r.specifier for r in requirements("system-ros.txt") if r.name == "pytest"]
    assert pytest_range.contains(UBUNTU_NOBLE_PYTEST)
    assert pytest_range.contains(NEWEST_IN_RANGE)
    for too_new in ("8.4.0", "8.4.2", "9.0.0", "9.2.0"):
        assert not pytest_range.contains(too_new), too_new


def test_pinned_pytest_plugins_accept_the_system_ros_pytest_range():
    # A plugin from base.txt that needs a newer pytest would make pip pull one past the range on ROS.
    plugins = []
    for pin in requirements("base.txt"):
        needs = [Requirement(r) for r in importlib.metadata.requires(pin.name) or []]
        plugins += [(pin.name, r.specifier) for r in needs if r.name == "pytest" and r.marker is None]
    assert any(name == "pytest-timeout" for name, _ in plugins), plugins
    for name, specifier in plugins:
        for version in (UBUNTU_NOBLE_PYTEST, NEWEST_IN_RANGE):
            assert specifier.contains(version), (name, specifier, version)
