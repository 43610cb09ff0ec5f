"""Versions of the libraries that wrote a file, recorded beside it (index manifests, trained models)."""

from __future__ import annotations

from typing import Iterable


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """``{package: version}`` for those of ``packages`` that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            pass
    return out
