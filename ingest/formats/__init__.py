"""Readers (and small writers, for tests and users' own conversions) of the native target formats.

One file per format: ``pfm`` (Portable Float Map), ``png`` (8- and 16-bit grayscale PNG), ``exr``
(OpenEXR), ``h5`` (HDF5 datasets), ``npy`` (NumPy arrays). Readers take the file's bytes, so they work on
anything ``pipeline.storage`` can read, and raise :class:`~ingest.bad_input.BadInput` for a truncated file or a
layout they do not know. They are the lowest layer of ingest and import no adapter: an adapter calls them
through ``SourceAdapter.decode``, which reads the file relative to the adapter's root and puts the file's
path in front of the reader's reason, which the ingest job records as the reject reason.
"""
