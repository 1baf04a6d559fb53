"""Installed package versions, recorded beside every figure and artifact they produced."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


def installed_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Each distribution's installed version, or None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
