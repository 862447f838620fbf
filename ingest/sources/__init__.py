"""Registry of dataset adapters: ``@register`` for ours, entry-point group ``dpt.sources`` for others'.

>>> adapter_class = get_source("nyu")
>>> adapter = adapter_class(root="s3://datasets/nyu")
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from ingest.sources.base import SourceAdapter

ENTRY_POINT_GROUP = "dpt.sources"
# MIX 6, the paper's training mix (Ranftl et al. 2021, Sec. 4.1): its ten sources in the paper's order, the
# adapters of this package by name. configs/dpt_*_mix6.yaml train on exactly these (tests/test_sources_registry.py).
MIX6: tuple[str, ...] = ("redweb", "diml", "movies3d", "megadepth", "wsvd", "tartanair", "hrwsi", "apolloscape",
                         "blendedmvs", "irs")
_REGISTRY: dict[str, type[SourceAdapter]] = {}
# Entry points that failed to load: name -> why. Another package's broken adapter must not take the
# others down with it; it fails only when asked for by name.
_BROKEN: dict[str, str] = {}


def register(cls: type[SourceAdapter]) -> type[SourceAdapter]:
    """Class decorator: make an adapter available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two adapters are named {cls.name!r}: {_REGISTRY[cls.name]} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    # Every module of this package except the base is one adapter that registers itself on import.
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    _BROKEN.clear()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        where = f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP})"
        try:
            cls = ep.load()
        except Exception as exc:  # whatever the other package's import raises
            _BROKEN[ep.name] = f"{where} cannot be loaded: {type(exc).__name__}: {exc}"
            continue
        if not (isinstance(cls, type) and issubclass(cls, SourceAdapter)):
            _BROKEN[ep.name] = f"{where} is not a SourceAdapter subclass"
            continue
        _REGISTRY[ep.name] = cls


def available_sources() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_source(name: str) -> type[SourceAdapter]:
    """The adapter class registered as ``name``; an unknown name lists the known ones."""
    _load_all()
    if name not in _REGISTRY and name in _BROKEN:
        raise ValueError(_BROKEN[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(sorted(_REGISTRY)) or 'none'}") from None
