"""Typed run configuration: dataclasses loaded from YAML, overridden from the command line.

Each stage declares its own dataclasses; this module only turns YAML (parsed with ``yaml.safe_load``) and
``key.sub=value`` overrides into instances of them, strictly: an unknown key, a missing required key or a
value of the wrong type is a :class:`ConfigError` whose message names the dotted key and where the value came
from: the file, or the command-line override (``override optim.lr=abc: expected a number, got 'abc'``).
A section may have variants: one of its keys (the task's ``kind``) picks the dataclass that reads the whole
section, and only that dataclass's keys are accepted there (:func:`variant_of`).

>>> @dataclasses.dataclass
... class Optim:
...     lr: float = 1e-4
>>> @dataclasses.dataclass
... class Run:
...     name: str
...     optim: Optim = dataclasses.field(default_factory=Optim)
>>> load_config(Run, "run.yaml", overrides=["optim.lr=3e-5"])
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, missing or of the wrong type; the message names the key."""


@dataclasses.dataclass(frozen=True)
class _Origin:
    """Where the values being checked came from: a file (or none) and the command-line overrides by dotted key,
    so that an error blames the override that set the bad value and the file for everything else."""

    file: str | None = None
    overrides: Mapping[str, str] = dataclasses.field(default_factory=dict)  # dotted key -> "key=value"

    def _override(self, path: str) -> tuple[str, str] | None:
        """``(key, item)`` of the most specific override that set ``path`` or a section above it."""
        keys = [k for k in self.overrides if path == k or path.startswith((f"{k}.", f"{k}["))]
        key = max(keys, key=len, default=None)
        return (key, self.overrides[key]) if key is not None else None

    def label(self, path: str) -> str | None:
        """The origin of the value at ``path``: ``override key=value``, the file, or None (plain data)."""
        found = self._override(path)
        if found:
            return f"override {found[1]}"
        inside = [item for k, item in self.overrides.items() if k.startswith(f"{path}.") or not path]
        if inside:  # a section's own check failed: the file's values and an override's meet there
            return f"{self.file} with override {inside[-1]}" if self.file else f"override {inside[-1]}"
        return self.file

    def where(self, path: str) -> str:
        """``label: path`` (just the label for the top level, or when an override set exactly this key)."""
        label = self.label(path)
        found = self._override(path)
        if label and (not path or (found and found[0] == path)):
            return label
        key = path or "<root>"
        return f"{label}: {key}" if label else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str, source: _Origin) -> Any:
    """Check and convert one YAML value to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # "X or null": X's own error names the key (an unknown key in an optional section)
            return _convert(options[0], value, path, source)
        for option in options:
            try:
                return _convert(option, value, path, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source.where(path)}: {value!r} fits none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{source.where(path)}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, path, source)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{source.where(path)}: {value!r} is not one of {[e.value for e in tp]}") from None
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source.where(path)}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{source.where(path)}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{path}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source.where(path)}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _convert(key_tp, k, f"{path}.{k}", source): _convert(val_tp, v, f"{path}.{k}", source)
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source.where(path)}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source.where(path)}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept anything float() parses exactly.
        if isinstance(value, bool):
            raise ConfigError(f"{source.where(path)}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source.where(path)}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source.where(path)}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{source.where(path)}: expected a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{source.where(path)}: unsupported annotation {_type_name(tp)}")


def _variants(cls: type) -> dict[str, type] | None:
    """A section whose keys depend on one of them (the task's ``kind``): ``{value: dataclass}``, else None.

    Such a class defines ``variant_key`` and ``variants()`` itself (its variants, which subclass it, do not);
    the value of ``variant_key`` in the section (default: the class's own default) picks the dataclass that
    reads the whole section, so each variant's keys are checked against that variant alone."""
    return cls.variants() if "variants" in vars(cls) else None


def _variant_name(cls: type, data: Any) -> Any:
    """The value of ``cls.variant_key`` in the section ``data``, else the class's default."""
    default = getattr(cls, cls.variant_key)
    return data.get(cls.variant_key, default) if isinstance(data, dict) else default


def variant_of(cls: type, data: Any, path: str = "", source: _Origin = _Origin()) -> type:
    """The dataclass that reads the section ``data`` of type ``cls`` (``cls`` itself unless it has variants)."""
    variants = _variants(cls)
    if variants is None:
        return cls
    value = _variant_name(cls, data)
    if value not in variants:
        key = f"{path}.{cls.variant_key}" if path else cls.variant_key
        raise ConfigError(f"{source.where(key)}: {value!r} is not one of {list(variants)}")
    return variants[value]


def _from_dict(cls: type[T], data: Any, path: str, source: _Origin) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source.where(path)}: expected a mapping for {cls.__name__}, got {data!r}")
    section, cls = cls, variant_of(cls, data, path, source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = [f"{path}.{k}" if path else str(k) for k in unknown]
        label = source.label(dotted[0])
        known = "known" if cls is section else f"the keys of {path}.{cls.variant_key} {_variant_name(cls, data)}"
        raise ConfigError(f"{label + ': ' if label else ''}unknown key {', '.join(dotted)} "
                          f"({known}: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source.where(sub)}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source.where(path)}: {exc}") from exc


def from_dict(cls: type[T], data: Mapping[str, Any] | None, source: str | None = None) -> T:
    """Build ``cls`` from plain data, checking every key and type; ``source`` (a file name) prefixes errors."""
    return _from_dict(cls, dict(data or {}), "", _Origin(source))


def to_dict(config: Any) -> dict[str, Any]:
    """A config instance -> plain YAML-safe data (enums and paths become strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def _override_parts(item: str) -> tuple[str, str]:
    """``"key.sub=value"`` -> ``("key.sub", "value")``."""
    key, eq, raw = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    return key, raw


def apply_overrides(cls: type, data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to raw config data; values are parsed as YAML scalars/lists.

    The dotted key must name a field of ``cls`` (checked here, so a typo fails before anything runs); below a
    ``dict`` field any key may be set; a list is set whole (``curriculum=[{steps: 10, sources: [a]}]``).
    The values are checked when the config is built (:func:`load_config`), which blames the override.
    """
    data = dict(data)
    for item in overrides:
        key, raw = _override_parts(item)
        parts = key.split(".")
        target_cls: Any = cls
        node = data
        for depth, part in enumerate(parts):
            names = {f.name: f for f in dataclasses.fields(target_cls)} if dataclasses.is_dataclass(target_cls) else None
            if names is not None and part not in names:
                prefix = ".".join(parts[:depth])
                raise ConfigError(f"override {item}: unknown key {key} "
                                  f"(known under {prefix or '<root>'}: {', '.join(sorted(names))})")
            hint = typing.get_type_hints(target_cls)[part] if names is not None else Any
            if depth == len(parts) - 1:
                node[part] = yaml.safe_load(raw) if raw.strip() else ""
                break
            here = ".".join(parts[:depth + 1])
            union = typing.get_origin(hint) in (typing.Union, types.UnionType)
            if any(typing.get_origin(a) in (list, tuple, Sequence) or a in (list, tuple)
                   for a in (typing.get_args(hint) if union else (hint,))):
                raise ConfigError(f"override {item}: {here} is a list; set it whole ({here}=[...])")
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
            target_cls = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), Any)
            variants = _variants(target_cls) if target_cls is not Any else None
            if variants is not None:  # the keys of the variant that the data names so far
                target_cls = variants.get(_variant_name(target_cls, node), target_cls)
            if target_cls is Any and names is not None and typing.get_origin(hint) not in (dict, Mapping):
                raise ConfigError(f"override {item}: {here} is not a section")
    return data


def _origin(file: str | None, overrides: Sequence[str]) -> _Origin:
    """The overrides by dotted key; a later one that sets a whole section replaces the earlier ones inside it."""
    by_key: dict[str, str] = {}
    for item in overrides:
        key, _ = _override_parts(item)
        for inner in [k for k in by_key if k == key or k.startswith(f"{key}.")]:
            del by_key[inner]
        by_key[key] = item
    return _Origin(file, by_key)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read YAML at ``path`` (optional), apply ``overrides``, and build a checked ``cls`` instance."""
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read config ({exc.strerror})") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    data = apply_overrides(cls, data, overrides)
    return _from_dict(cls, data, "", _origin(source, overrides))


def _pretty(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _pretty(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _pretty(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def reference_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``[(dotted key, type, default)]`` for every leaf of a config dataclass (the README's reference).

    A section that is a list of dataclasses shows its items' keys as ``key[].field``; a section with variants
    (the task's, :func:`variant_of`) shows the key that picks one, then each variant's keys marked with it.
    """
    variants = _variants(cls)
    if variants is not None:  # the key that picks the variant, then each variant's own keys
        key = cls.variant_key
        rows = [(f"{prefix}{key}", "one of " + ", ".join(f"`{name}`" for name in variants), f"`{getattr(cls, key)}`")]
        for name, variant in variants.items():
            rows += [(k, f"{t} (with `{prefix}{key}: {name}`)", d) for k, t, d in reference_rows(variant, prefix)
                     if k != f"{prefix}{key}"]
        return rows
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key, tp, default = f"{prefix}{field.name}", hints[field.name], _default(field)
        args = typing.get_args(tp)
        nested = next((a for a in (tp, *args) if dataclasses.is_dataclass(a)), None)
        if nested is not None:
            is_list = typing.get_origin(tp) in (list, tuple)
            if default is None:
                rows.append((key, f"{nested.__name__} or null", "`null` (section off)"))
            rows += reference_rows(nested, f"{key}[]." if is_list else f"{key}.")
            continue
        if default is dataclasses.MISSING:
            shown = "required"
        else:
            text = yaml.safe_dump(to_dict(default), default_flow_style=True, width=1000).strip()
            shown = f"`{text.removesuffix('...').strip()}`"
        rows.append((key, _pretty(tp), shown))
    return rows


def reference_table(cls: type) -> str:
    """A markdown table of :func:`reference_rows`."""
    lines = ["| key | type | default |", "|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} |" for k, t, d in reference_rows(cls)]
    return "\n".join(lines)
