"""A local path for a file that a library must open by path with random access (HDF5: NYU's labeled ``.mat``).

A local URL is its own path. An ``s3://`` object is downloaded once per machine into a cache under
``$DPT_CACHE`` (default ``~/.cache/dpt``), ``downloads/<sha256 of the URL, 16 hex>-<name>``, and reused while
its size matches the object's. The download goes to a temporary file in the same folder that is renamed
over the final name when complete, so workers on one machine that ask at the same time each see either no
copy or a complete one (at worst both download it once), never a partial file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from pipeline import storage


def cache_dir() -> str:
    return os.environ.get("DPT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dpt"))


def local_copy(url: str, options: storage.S3Options | None = None) -> str:
    """The local path of ``url``: itself when local (``FileNotFoundError`` naming it when absent), else the
    cached download of the object."""
    if not storage.is_s3(url):
        if not os.path.exists(url):
            raise FileNotFoundError(f"{url}: no such file")
        return url
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), "downloads", f"{digest}-{storage.basename(url)}")
    if os.path.exists(path) and os.path.getsize(path) == storage.size(url, options):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), prefix=".part-", delete=False) as dst:
        try:
            with storage.open_read(url, options) as src:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
        except BaseException:
            dst.close()
            os.unlink(dst.name)
            raise
    os.replace(dst.name, path)
    return path
