"""Where a policy bundle's parts live on disk: a leaf, so settings can name them.

`gateway.settings` derives a bundle's paths from the environment; it must not import the
policy compiler to do so (that import made settings part of the one import cycle).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundlePaths:
    """Where a bundle's parts live. `for_policies` derives the conventional layout."""

    policies: Path
    templates: Path
    providers: Path
    schemas: Path

    @classmethod
    def for_policies(
        cls,
        policies: Path,
        *,
        templates: Path | None = None,
        providers: Path | None = None,
        schemas: Path | None = None,
    ) -> BundlePaths:
        root = policies.resolve().parent
        return cls(
            policies=policies,
            templates=templates or root / "templates",
            providers=providers or root / "providers.yaml",
            schemas=schemas or default_schemas_dir(root),
        )

    def all_files(self) -> list[Path]:
        files = sorted(yaml_files(self.policies))
        files += sorted(yaml_files(self.templates))
        if self.providers.exists():
            files.append(self.providers)
        return files


def default_schemas_dir(root: Path) -> Path:
    """The bundle's own `schemas/`, else the installed package's (the wheel carries them in
    `gateway/schemas`), else the source checkout's."""
    package = Path(__file__).resolve().parent
    for candidate in (root / "schemas", package / "schemas", package.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    return package / "schemas"


def yaml_files(directory: Path) -> Iterable[Path]:
    if not directory.is_dir():
        return []
    return [p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
