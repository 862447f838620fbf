"""A pyarrow S3 filesystem that keeps its retry strategy when it is pickled (for Ray Train's checkpoints).

Ray Train writes checkpoints through a pyarrow filesystem, which it pickles to every training worker.
pyarrow's ``S3FileSystem`` pickles endpoint, region and timeouts but drops ``retry_strategy`` (apache/arrow
GH-47348), so the workers, which do the uploads, would fall back to pyarrow's default whatever the driver
chose. :class:`RetryingS3FileSystem` carries its attempts through the pickle. Build it with :func:`build`
(``pipeline.storage.arrow_filesystem`` does, from the same settings as the boto3 client).
"""

from __future__ import annotations

import pyarrow.fs


class RetryingS3FileSystem(pyarrow.fs.S3FileSystem):
    """``pyarrow.fs.S3FileSystem`` with ``AwsStandardS3RetryStrategy(max_attempts)`` that survives pickling."""

    max_attempts: int

    def __reduce__(self):
        _, (kwargs,) = super().__reduce__()
        return build, (kwargs, self.max_attempts)


def build(kwargs: dict, max_attempts: int) -> RetryingS3FileSystem:
    """``S3FileSystem(**kwargs)`` with the standard retry strategy of ``max_attempts`` tries per request."""
    kwargs = {k: v for k, v in kwargs.items() if k != "retry_strategy"}  # a pyarrow that pickles it after all
    filesystem = RetryingS3FileSystem(
        retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=max_attempts), **kwargs)
    filesystem.max_attempts = max_attempts
    return filesystem
