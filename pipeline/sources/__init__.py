"""The Source seam: what ``analyze()`` reads frames from (see base.py), and the file sources.

    probe.py     file checks before any decode: exists, regular, not empty, SHA-256, the allow-listed
                 demuxers and the one-file ``io_open`` (its docstring says why), the pixel cap
    file.py      ``open_media(path, policy)`` / ``open_media_for(path, settings)``: checks, then a source
    still.py     one photo, decoded at open, as a one-frame source
    video.py     a video file, decoded lazily and sampled per the SamplingPolicy
    rotation.py  display rotation shared by both
    live.py      ``open_live(url, options)``: a live URL (RTSP, HLS, MPEG-TS over HTTP/UDP, ...), read by a
                 thread of its own, newest frame first; live_open.py checks the URL and opens it safely
    push.py      ``PushSource``: frames a client pushes (a webcam); newest.py: the newest-first hand-over

Every PyAV (and Pillow) quirk is handled in this package and nowhere else:

- rotation: av 18 has no stream-level display-matrix getter, so the first frame is decoded at open and
  its ``VideoFrame.rotation`` (counter-clockwise degrees) is read; ``MediaInfo.rotation_deg`` stores
  the clockwise display rotation as phones mean it (0/90/180/270). Flips in the matrix are ignored.
- ``frame.time`` is None without pts (raw .h264): time falls back to ``index / fps``; it is NaN for frames
  flushed with ``decode(None)`` (no time_base): time is then ``pts * stream.time_base``. AVI frames carry
  reordered pts after B-frames, so AVI (a constant-rate container) is always timed by ``index / fps``.
- times are seconds since the stream's start_time (MPEG-TS starts at ~1.4 s), clamped non-decreasing.
- a cut file: frame-threaded decoders swallow the error and decode garbage, so decoding stops at the
  first packet the demuxer flags corrupt; frames flagged ``is_corrupt`` (concealed errors) are skipped.
- ``VideoFrame.side_data`` raises ValueError on side-data types av does not know (JPEG EXIF): never read.
- mp3/m4a cover art is a one-picture "video" stream (``attached_pic``): not a video.
- stills go through Pillow (EXIF orientation incl. mirroring, 16-bit, palette, alpha); PyAV only when
  Pillow cannot read them. FFmpeg's ``image2`` is a guess from the extension alone.
- the pixel cap is checked on the header (Pillow's, or the stream's for videos) before any decode, and
  every decoder gets ``max_pixels``: a frame larger than its header said is refused by FFmpeg itself;
  FFmpeg reports that refusal only in its log, which probe.py reads (``ffmpeg_errors``).
"""

from pipeline.sources.base import LiveInput, Source
from pipeline.sources.file import open_media, open_media_for
from pipeline.sources.live import LiveSource, open_live
from pipeline.sources.live_open import check_url
from pipeline.sources.push import PushSource
from pipeline.sources.still import StillSource
from pipeline.sources.video import VideoSource

__all__ = [
    "LiveInput",
    "LiveSource",
    "PushSource",
    "Source",
    "StillSource",
    "VideoSource",
    "check_url",
    "open_live",
    "open_media",
    "open_media_for",
]
