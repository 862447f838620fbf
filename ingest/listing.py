"""Pairing a source's files into samples: shared by the dataset adapters' ``list_samples``.

A released dataset names an image and its target by parallel paths (``Imgs/x.jpg`` and ``RDs/x.png``).
Each adapter describes every role (image, target, mask, ...) with a :class:`Role`: a regular expression
over root-relative paths whose named groups identify the sample, and a template that names the file from
those groups. Pairing matches every file of every role, so a sample appears when *any* of its files
exists: an image without its target (or a target without its image) is still listed, and reading the
absent file raises ``BadInput("<path>: target missing")``, which the ingest job records as a
reject instead of silently dropping the input.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable, Iterable

from ingest.sources.base import SampleRef

# Matches any (possibly empty) folder prefix such as "ReDWeb_V1/": datasets are often unpacked one level down.
PREFIX = r"(?P<prefix>(?:[^/]+/)*?)"


@dataclasses.dataclass(frozen=True)
class Role:
    """How one kind of file of a sample is named.

    ``pattern`` is matched against the whole root-relative path; its named groups (except ``ext``) are
    the sample's identity. ``template`` rebuilds the path from those groups (``str.format``), naming the
    file to report when it is absent. ``ext`` may capture the extension of files that come in several.
    """

    pattern: str
    template: str

    def __post_init__(self):
        object.__setattr__(self, "regex", re.compile(self.pattern))


def pair_files(
    files: Iterable[str],
    roles: dict[str, Role],
    make_ref: Callable[[dict[str, str], dict[str, str]], SampleRef],
    optional: tuple[str, ...] = (),
) -> list[SampleRef]:
    """Group ``files`` into samples, one per identity found in any required role; sorted by id.

    ``make_ref(groups, files)`` turns one identity (its named groups) and its files (role -> relative
    path; absent files named by their template) into a :class:`SampleRef`. ``optional`` roles are only
    included when their file exists. Ids must come out unique; two images differing only by extension
    (``x.jpg`` and ``x.png``) become two samples with the extension appended to their ids.
    """
    found: dict[tuple, dict[str, list[str]]] = {}
    groups_of: dict[tuple, dict[str, str]] = {}
    for path in files:
        for role, spec in roles.items():
            m = spec.regex.fullmatch(path)
            if m is None:
                continue
            groups = {k: v for k, v in m.groupdict().items() if k != "ext"}
            key = tuple(sorted(groups.items()))
            groups_of.setdefault(key, groups)
            found.setdefault(key, {}).setdefault(role, []).append(path)
    refs = []
    for key, by_role in found.items():
        if not any(role in by_role for role in roles if role not in optional):
            continue  # only optional files (a mask without image or target): not an input
        groups = groups_of[key]
        variants = by_role.get("image") or [None]
        for image in sorted(variants, key=lambda p: p or ""):
            paths = {}
            for role, spec in roles.items():
                if role == "image" and image is not None:
                    paths[role] = image
                elif role in by_role:
                    paths[role] = sorted(by_role[role])[0]
                elif role not in optional:
                    paths[role] = spec.template.format(**groups)
            ref = make_ref(groups, paths)
            if len(variants) > 1:
                ref = dataclasses.replace(ref, id=f"{ref.id}.{image.rsplit('.', 1)[-1].lower()}")
            refs.append(ref)
    refs.sort(key=lambda r: r.id)
    counts = collections.Counter(r.id for r in refs)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise ValueError(f"adapter layout gives duplicate sample ids: {duplicates[:5]}")
    return refs


def sample_id(*parts: str) -> str:
    """Join the non-empty path parts of an identity with ``/`` (``make_key`` makes it key-safe)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
