"""An RTSP server for tests: GStreamer's RTSP server in a subprocess of Debian's python3 (where python3-gi
and the GStreamer typelibs live; the venv has no gi), RTSP over TCP only, serving a clip PyAV encoded;
``stop()``/``start()`` on the same port. ``gst_rtsp_missing()`` says why it cannot run (a test skips with it).
"""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import pytest

from pipeline.encode import encode_video
from tests.livemedia import JOIN_S, LOOPBACK, X264, LiveClip, free_port

# --- RTSP ------------------------------------------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-gi and the GStreamer typelibs live
_GST_RTSP_SERVER = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
Gst.init(None)
port, mount, path = sys.argv[1], sys.argv[2], sys.argv[3]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
# each client gets its own pipeline, from the clip's start, paced at real time by the RTSP sinks
factory.set_launch(f"( filesrc location={path} ! matroskademux ! rtph264pay name=pay0 pt=96 config-interval=1 )")
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)  # RTSP over TCP only: a client asking for UDP is refused
server.get_mount_points().add_factory(mount, factory)
if server.attach(None) == 0:
    sys.exit("cannot listen on port " + port)
print("READY", flush=True)
GLib.MainLoop().run()
"""


def gst_rtsp_missing() -> str | None:
    """Why the GStreamer RTSP server cannot run here (None when it can)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is not installed"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "missing = [e for e in ('filesrc', 'matroskademux', 'rtph264pay', 'appsink', 'rtpbin')"
        " if Gst.ElementFactory.find(e) is None]; print(' '.join(missing))"
    )
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "probing GStreamer timed out"
    if done.returncode != 0:
        return f"GStreamer's RTSP server is not importable: {done.stderr.strip().splitlines()[-1:]}"
    if done.stdout.strip():
        return f"GStreamer elements missing: {done.stdout.strip()}"
    return None


class RtspServer:
    """GStreamer's RTSP server on 127.0.0.1:``port`` serving ``clip_path`` (H.264 in Matroska, e.g. from
    :func:`rtsp_clip`) at ``rtsp://127.0.0.1:port/cam``, RTSP over TCP only (``rtsp_transport=tcp``).
    Every client plays the clip from its start, paced at real time; at its end the server sends BYE.
    ``stop()`` kills the process (a crash); ``start()`` runs it again on the same port.
    Skips the test when GStreamer is not installed (``.ci/run`` installs it)."""

    def __init__(self, clip_path: Path, port: int = 0) -> None:
        if (why := gst_rtsp_missing()) is not None:
            pytest.skip(f"no RTSP server: {why} (apt: gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
        self.clip_path = clip_path
        self.port = port or free_port()
        self._proc: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"rtsp://{LOOPBACK}:{self.port}/cam"

    def start(self, timeout_s: float = 20.0) -> None:
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", _GST_RTSP_SERVER, str(self.port), "/cam", str(self.clip_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._proc = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "READY":
            self.stop()
            raise RuntimeError(f"the RTSP server did not start: {line.strip() or 'no answer'}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(JOIN_S)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rtsp_clip(path: Path, clip: LiveClip, seconds: float) -> Path:
    """``seconds`` of ``clip`` as H.264 in Matroska (what :class:`RtspServer` plays)."""
    frames = (clip.frame(i) for i in range(round(seconds * clip.fps)))
    return encode_video(path, frames, fps=clip.fps, options=dict(X264), gop=clip.keyint)
