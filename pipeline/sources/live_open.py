"""Opening a live URL with PyAV: which URLs are accepted, what FFmpeg may open for them, and its timeouts.

Three locks keep a live URL on the network, each enough alone for the cases we know of:

1. the scheme must be one of :data:`~pipeline.live_types.LIVE_SCHEMES` (never ``file:``, ``concat:``,
   ``subfile:``, ``pipe:``, ``data:``, ...), checked on the caller's thread before anything opens;
2. FFmpeg's ``protocol_whitelist``, per scheme (:data:`PROTOCOL_WHITELISTS`): every URL FFmpeg opens on
   the way, the first and those named inside it (HLS segments and keys, HTTP redirects), must use one
   of these protocols. An HLS playlist served over HTTP that names ``file:///etc/passwd`` is refused by
   FFmpeg itself (``Protocol 'file' not on whitelist``): HLS's own checks let a ``.ts`` file through;
3. FFmpeg's ``format_whitelist`` (:data:`LIVE_DEMUXERS`): no demuxer that reads other files (concat,
   image2 sequences, DASH) runs, and mov gets ``enable_drefs=0`` (no external tracks).

Timeouts (never hang): PyAV's ``timeout=(open_timeout_s, read_timeout_s)`` installs FFmpeg's interrupt
callback, which bounds the open (connect + stream probing, in total) and each packet read; FFmpeg's own
socket timeouts (microseconds, checked against this FFmpeg's option tables) are set as well, so a socket
gives up even where no interrupt is polled: RTSP ``timeout`` (``stimeout`` is gone), HTTP/HLS
``rw_timeout``, UDP/RTP/TCP ``timeout``. RTSP runs over TCP (``rtsp_transport=tcp``): no lost UDP packets,
no UDP ports to open. FFmpeg's own HTTP ``reconnect`` stays off: reconnects are ours, counted and shown.
"""

from __future__ import annotations

import base64
import re
import ssl
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import av

from pipeline.errors import MediaTooLarge, SourceError, SourceTimeout, UnsupportedSource
from pipeline.live_types import LIVE_SCHEMES, LiveOptions
from pipeline.sources.probe import ffmpeg_errors

# FFmpeg demuxer names (any comma-separated part of AVInputFormat.name, as format_whitelist matches):
# what a live source is carried in. HLS segments are opened with the same list (FFmpeg copies it).
LIVE_DEMUXERS = frozenset(
    {
        "hls",
        "mpegts",  # HTTP/UDP/SRT streams and HLS segments
        "rtsp",
        "rtp",
        "sdp",  # session descriptions name only network addresses here (the protocol whitelist holds)
        "flv",
        "matroska",  # matroska,webm
        "mov",  # fMP4 HLS segments; enable_drefs=0
        "mjpeg",
        "mpjpeg",  # multipart JPEG (HTTP cameras)
        "h264",
        "hevc",
        "aac",  # HLS audio renditions beside the video
        "mp3",
    }
)

# scheme -> the FFmpeg protocols that may be opened on its behalf (never file, pipe, data, concat, fd, ...).
# rtsp/rtsps are demuxers, not protocols: they open tcp (or tls) connections, checked against this list.
_WEB = "http,https,tcp,tls,crypto"  # crypto: AES-128 HLS segments; its inner URL is checked again
PROTOCOL_WHITELISTS: dict[str, str] = {
    "http": _WEB,
    "https": _WEB,
    "rtsp": "tcp",
    "rtsps": "tcp,tls",
    "udp": "udp",
    "rtp": "rtp,udp",
    "srt": "srt",
    "tcp": "tcp",
}
assert set(PROTOCOL_WHITELISTS) == set(LIVE_SCHEMES)

_ANALYZE_US = 1_000_000
_TIMER_SLACK_S = 0.05
_SCHEME = re.compile(r"([A-Za-z0-9+.-]*):")  # FFmpeg's URL_SCHEME_CHARS, as its protocol lookup reads them
_LISTEN_SCHEMES = ("udp", "rtp")  # udp://@:5000 = listen on port 5000, any address


@dataclass(frozen=True, slots=True)
class LiveUrl:
    """A checked live URL. ``url`` goes to FFmpeg (scheme lower-cased, credentials kept); ``name`` is for
    people and logs: no user name, password, query or fragment (tokens travel there)."""

    url: str
    scheme: str
    name: str


def check_url(url: str) -> LiveUrl:
    """Validate ``url`` without touching the network; raises UnsupportedSource."""
    if not isinstance(url, str) or not url.strip():
        raise UnsupportedSource("no URL given")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UnsupportedSource("a live URL cannot contain white space or control characters")
    allowed = ", ".join(f"{s}://" for s in LIVE_SCHEMES)
    m = _SCHEME.match(url)
    scheme = m.group(1).lower() if m else ""
    if scheme not in LIVE_SCHEMES:
        what = f"{scheme}: URLs are" if scheme else "a path or a URL without a scheme is"
        raise UnsupportedSource(f"{what} not accepted as a live source; only {allowed} URLs are")
    url = scheme + url[len(scheme) :]
    if not url.startswith(f"{scheme}://"):
        raise UnsupportedSource(f"a {scheme} URL must look like {scheme}://host[:port]/...")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UnsupportedSource(f"the {scheme} URL has an invalid port") from None
    host = parts.hostname
    hostport = parts.netloc.rpartition("@")[2]
    if not host:
        if not (scheme in _LISTEN_SCHEMES and parts.netloc.startswith("@") and port is not None):
            raise UnsupportedSource(f"the {scheme} URL names no host")
        return LiveUrl(url, scheme, f"{scheme}://@:{port}")
    if hostport.startswith("[") != (":" in host):  # an IPv6 address is bracketed, a name is not
        raise UnsupportedSource(f"the {scheme} URL has an invalid host")
    shown = f"[{host}]" if ":" in host else host
    return LiveUrl(url, scheme, f"{scheme}://{shown}{f':{port}' if port is not None else ''}{parts.path}")


def container_options(scheme: str, options: LiveOptions) -> dict[str, str]:
    """FFmpeg's options for opening a ``scheme`` URL: the two whitelists and the socket timeouts."""
    # the socket timeouts back up PyAV's interrupt; they must not cut the open short of open_timeout_s
    socket_us = str(round(max(options.open_timeout_s, options.read_timeout_s) * 1_000_000))
    opts = {
        "protocol_whitelist": PROTOCOL_WHITELISTS[scheme],
        "format_whitelist": ",".join(sorted(LIVE_DEMUXERS)),
        "enable_drefs": "0",
        # probing reads this much stream before the first frame (FFmpeg's default, 5 s, is 2+ s of wait
        # on a live MPEG-TS); a second finds the video's size and rate, and leaves the open timeout room
        "analyzeduration": str(min(_ANALYZE_US, round(options.open_timeout_s * 1_000_000 / 2))),
    }
    if scheme in ("rtsp", "rtsps"):
        opts |= {"rtsp_transport": "tcp", "timeout": socket_us}
    elif scheme in ("http", "https"):
        opts |= {"rw_timeout": socket_us}
    elif scheme in ("udp", "rtp", "tcp"):
        opts |= {"timeout": socket_us}
        if scheme == "udp":
            opts["overrun_nonfatal"] = "1"  # a burst that overfills FFmpeg's UDP buffer loses packets, not the session
    return opts


class Failure(Exception):
    """Why one connection ended badly (internal to the live reader). ``permanent``: reconnecting cannot
    help (refused format, no video, too large, unknown protocol); ``timeout``: nothing came in time;
    ``healthy``: the connection delivered frames before it ended (the reconnect count starts anew)."""

    def __init__(
        self,
        reason: str,
        *,
        timeout: bool = False,
        permanent: bool = False,
        healthy: bool = False,
        error: Exception | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout
        self.permanent = permanent
        self.healthy = healthy
        self.error = error  # the error to raise as it is (MediaTooLarge, UnsupportedSource)

    def final(self, name: str, tries: int) -> Exception:
        """The error the consumer sees when no reconnect is left (``tries`` reconnects were made)."""
        if self.error is not None:
            return self.error
        after = f" (after {tries} reconnect attempt{'s' * (tries != 1)})" if tries else ""
        cls = SourceTimeout if self.timeout else SourceError
        return cls(f"{name}: {self.reason}{after}")


def explain(
    e: BaseException,
    live: LiveUrl,
    *,
    opening: bool,
    options: LiveOptions,
    waited_s: float = 0.0,
    logged: Sequence[tuple[int, str, str]] = (),
) -> Failure:
    """A PyAV/OS error of the reader after ``waited_s`` in FFmpeg (and FFmpeg's error lines meanwhile) ->
    a Failure whose reason names no credentials."""
    limit_s = options.open_timeout_s if opening else options.read_timeout_s
    # ExitError is PyAV's timeout interrupt; some demuxers turn it into their own code (RTSP: "invalid
    # data"), so a call that failed after the whole timeout timed out, whatever FFmpeg says
    timed_out = waited_s >= limit_s - _TIMER_SLACK_S
    if timed_out or isinstance(e, (av.ExitError, av.TimeoutError, TimeoutError)):
        if opening:
            return Failure(f"no stream within {options.open_timeout_s:g} s of opening", timeout=True)
        return Failure(f"no packet for {options.read_timeout_s:g} s", timeout=True)
    if isinstance(e, av.ProtocolNotFoundError):
        return Failure("", permanent=True, error=UnsupportedSource("this FFmpeg build cannot open such URLs"))
    lines = [text.strip() for _level, _name, text in logged]
    if any("not on whitelist" in line for line in lines):  # a playlist or redirect naming file:, data:, ...
        return Failure("it names a URL that may not be opened (only network URLs of its kind are)", permanent=True)
    if isinstance(e, av.ArgumentError) and opening:  # what FFmpeg returns when the probed demuxer is not listed
        return Failure("it is in a format that is not read live", permanent=True)
    reason = str(getattr(e, "strerror", None) or e.__class__.__name__)
    if lines:
        reason += f" ({lines[-1]})"
    return Failure(_scrub(reason, live)[:300])


def _scrub(text: str, live: LiveUrl) -> str:
    """``text`` without the URL's credentials (FFmpeg's messages quote URLs)."""
    text = text.replace(live.url, live.name)
    userinfo = urlsplit(live.url).netloc.rpartition("@")[0]
    return text.replace(userinfo + "@", "") if userinfo else text


def open_url(live: LiveUrl, options: LiveOptions) -> Any:
    """Open ``live`` (on the reader thread: this blocks up to ``open_timeout_s``); returns an
    ``av.InputContainer``. Raises Failure."""
    t0 = time.monotonic()
    try:
        with ffmpeg_errors() as logged:
            container = av.open(
                live.url,
                timeout=(options.open_timeout_s, options.read_timeout_s),
                options={"max_pixels": str(options.max_pixels)},  # the decoder refuses larger frames itself
                container_options=container_options(live.scheme, options),
            )
    except (av.FFmpegError, OSError) as e:
        waited_s = time.monotonic() - t0
        raise explain(e, live, opening=True, options=options, waited_s=waited_s, logged=logged) from None
    fmt = container.format.name
    if not any(part in LIVE_DEMUXERS for part in fmt.split(",")):  # the whitelist, checked once more
        container.close()
        raise Failure(f"it is in a format that is not read live ({fmt})", permanent=True)
    if not container.streams.video:
        container.close()
        raise Failure("it has no video stream", permanent=True)
    return container


def check_size(name: str, width: int, height: int, max_pixels: int) -> None:
    """Raise Failure(MediaTooLarge) for frames over the pixel cap (width 0 = not known yet: passes)."""
    if width * height > max_pixels:
        too_large = MediaTooLarge(
            f"{name} is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels"
        )
        raise Failure("", permanent=True, error=too_large)


_PLAYLIST_MAX_BYTES = 1 << 20


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urlsplit(newurl).scheme not in ("http", "https"):
            return None  # urllib itself would follow ftp:
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_text(url: str, timeout_s: float) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an HTTP URL: {parts.scheme}:")
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)))
    if parts.username is not None:  # as FFmpeg does with credentials in the URL: basic auth
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    # FFmpeg's https does not verify certificates either (tls_verify=0): the same server, read the same way
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(_HttpOnly, urllib.request.HTTPSHandler(context=context))
    with opener.open(request, timeout=timeout_s) as response:
        return response.read(_PLAYLIST_MAX_BYTES).decode("utf-8", "replace")


def hls_ended(url: str, timeout_s: float) -> bool:
    """Whether the HLS playlist at ``url`` now ends with ``#EXT-X-ENDLIST`` (a master playlist: its first
    variant's). FFmpeg's HLS demuxer ends the same way when the playlist ended and when its server died
    (it logs only a warning), so the reader asks the server again: an ended playlist says so, and a dead
    server does not answer. HTTP(S) only; False when the playlist cannot be read."""
    try:
        text = _fetch_text(url, timeout_s)
        if "#EXT-X-STREAM-INF" in text:
            lines = [line.strip() for line in text.splitlines()]
            marks = [i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF")]
            variant = next((line for line in lines[marks[0] + 1 :] if line and not line.startswith("#")), None)
            if variant is None:
                return False
            text = _fetch_text(urljoin(url, variant), timeout_s)
    except (OSError, ValueError):  # URLError and socket timeouts are OSErrors
        return False
    return "#EXT-X-ENDLIST" in text
