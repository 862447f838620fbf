"""Benchmark readers, one per file, by the name used on the command line."""

from __future__ import annotations

from evaluation.benchmarks.ade20k import ADE20KReader
from evaluation.benchmarks.base import BenchmarkError, BenchmarkReader, BenchmarkSample
from evaluation.benchmarks.diw import DIWReader
from evaluation.benchmarks.eth3d import ETH3DReader
from evaluation.benchmarks.kitti import KITTIEigenReader, KITTIReader
from evaluation.benchmarks.nyu import NYUReader
from evaluation.benchmarks.pascal_context import PascalContextReader
from evaluation.benchmarks.sintel import SintelReader
from evaluation.benchmarks.tum import TUMReader

READERS: dict[str, type[BenchmarkReader]] = {
    r.name: r for r in (DIWReader, ETH3DReader, SintelReader, KITTIReader, KITTIEigenReader, NYUReader, TUMReader,
                        ADE20KReader)
}
# Benchmarks that are another benchmark's images under another protocol (multi-scale ADE20K; the metric depth
# protocols of NYUv2 and KITTI): benchmark -> its folder, whose reader it uses unless READERS has its own.
ALIASES = {"ade20k_ms": "ade20k", "nyu_metric": "nyu", "kitti_metric": "kitti"}

__all__ = ["READERS", "BenchmarkError", "BenchmarkReader", "BenchmarkSample", "make_reader"]

# DPT's Table 5: Pascal Context validation, single- and multi-scale.
READERS[PascalContextReader.name] = PascalContextReader
ALIASES["pascal_context_ms"] = PascalContextReader.name


def make_reader(name: str, data_root: str) -> BenchmarkReader:
    """The reader of benchmark ``name`` over its folder ``<data_root>/<folder>`` (``ALIASES``, else ``name``)."""
    from pipeline import storage

    folder = ALIASES.get(name, name)
    reader = READERS.get(name) or READERS.get(folder)
    if reader is None:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join([*READERS, *ALIASES])}")
    return reader(storage.join(data_root, folder))
