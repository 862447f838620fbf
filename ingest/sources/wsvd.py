"""WSVD (Wang et al., CVPR 2019, "Web Stereo Video Supervision"): stereo videos from YouTube with
disparity from optical flow.

WSVD is released as a list of video ids and clip times, not as files: users download the videos,
extract left frames and compute disparity themselves. This adapter reads the same documented layout as
3D Movies (see ``ingest/sources/movies3d.py``), where ``<video>`` is the YouTube video id::

    <video>/[<clip>/...]left/<frame>.jpg|png
    <video>/[<clip>/...]disparity/<frame>.pfm | <frame>.png + disparity/scale.txt
    <video>/[<clip>/...]mask/<frame>.png        optional

Units: pixels (kind ``stereo_disparity``). Group: the video id, so that a video never spans splits.
"""

from __future__ import annotations

from ingest.sources import register
from ingest.sources.movies3d import Movies3D


@register
class WSVD(Movies3D):
    """WSVD: the 3D Movies layout, one folder per YouTube video id (the group).

    Native layout, units, invalid values and the conversion rule: see the module docstring.
    """

    name = "wsvd"

    def metadata(self, ref) -> dict:
        return {**super().metadata(ref), "video_id": ref.group}
