"""``dff serve``: one process, one port — the websocket API, the HTTP report API and the web page.

This is the composition root: it builds stream's ASGI app, mounts the Gradio page on it, and makes the
page's bundled examples: the public-domain astronaut photo in ``examples/`` and a short three-person clip
generated from it at first use (nothing with real footage is committed). The clip is made here, on the
CLI side, because the web part of ``ui`` never imports ``pipeline`` (tests/test_architecture.py).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ui.cmd_analyze import EXIT_OK, EXIT_USAGE, settings_from_args

log = logging.getLogger("dff.ui")

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"  # present in a source checkout
PHOTO_NAME = "astronaut.jpg"
CLIP_NAME = "three_people.mp4"
# where the astronaut's head and shoulders are in the 512×512 photo (x1, y1, x2, y2)
HEAD_BOX = (140, 20, 310, 190)


def make_clip(photo: Path, out: Path, *, seconds: float = 4.0, fps: int = 10, width: int = 640) -> Path:
    """Three copies of the photo's face (one mirrored) drifting across a grey 16:9 canvas, H.264.

    Written to a temporary name first, so a crash never leaves a half-written example behind.
    """
    import numpy as np
    from PIL import Image

    from pipeline.encode import encode_video

    height = width * 9 // 16
    size = width * 15 // 64  # each face tile: 150 px at 640 wide
    head = Image.open(photo).convert("RGB").crop(HEAD_BOX)
    tiles = [
        np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))
        for img in (head, head.transpose(Image.Transpose.FLIP_LEFT_RIGHT), head)
    ]
    n_frames = round(seconds * fps)
    starts = [(width // 32 + i * width * 5 // 16, height // 6 + (i % 2) * height // 12) for i in range(3)]

    def frames() -> Iterator[np.ndarray]:
        for t in range(n_frames):
            canvas = np.full((height, width, 3), 90, dtype=np.uint8)
            for (x0, y0), tile in zip(starts, tiles, strict=True):
                x = min(x0 + 2 * t, width - size)
                canvas[y0 : y0 + size, x : x + size] = tile
            yield canvas

    out.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(out, frames(), fps)


def example_files(data_dir: Path, examples_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """The example photo and clip that exist (the clip is made into ``data_dir/examples`` once).

    A missing photo or a failed encode only drops that example (logged); the page works without them.
    """
    photo = examples_dir / PHOTO_NAME
    if not photo.is_file():
        log.info("no example photo at %s; the page shows no examples", photo)
        return []
    clip = data_dir / "examples" / CLIP_NAME
    if not clip.is_file():
        try:
            make_clip(photo, clip)
        except Exception:  # an example is a convenience: never let it stop the server
            log.warning("could not make the example clip %s", clip, exc_info=True)
            return [photo]
    return [photo, clip]


def mount_web_ui(app, settings) -> str | None:  # app: starlette.applications.Starlette, settings: Settings
    """Mount the web UI on the stream app (same port as the websocket and HTTP APIs); returns its path.

    This is where the Gradio UI is mounted: ``ui/app.py`` builds a ``gradio.Blocks`` that is a websocket
    client of ``/v1/analyze`` (through ui/client.py), and this function calls
    ``gradio.mount_gradio_app(app, blocks, path="/")``. The stream routes are registered first, so they
    keep precedence over a UI mounted at "/".
    The page learns the server's option defaults, upload cap and auth rule from ``settings``; the example
    clip is generated into the data directory on the first start.
    """
    import gradio as gr

    from stream.auth import is_loopback
    from ui.app import RecordAddress, ServerAddress, UiConfig, build_blocks, mount_options

    cfg = UiConfig.from_settings(
        settings, host_is_loopback=is_loopback(settings.host), examples=example_files(settings.data_dir)
    )
    address = ServerAddress()  # the page dials its own server; the middleware learns where that is
    app.add_middleware(RecordAddress, address=address)
    gr.mount_gradio_app(app, build_blocks(cfg, address), path="/", **mount_options(cfg))
    return "/"


# `dff serve` flag -> Settings field; each overrides its DFF_<FIELD> variable when given
SERVE_FLAGS = (
    "host",
    "port",
    "data_dir",
    "models_dir",
    "max_upload_mb",
    "max_jobs",
    "max_queue",
    "keep_uploads",
    "allowed_hosts",
    "max_jobs_per_client",
    "min_upload_kib_s",
    "upload_grace_s",
)


# scale-out (README "Scale-out on Ray"): where jobs run; added to the parser by ``add_scale_out_flags``
SCALE_OUT_FLAGS = ("backend", "ray_address", "ray_actors")


def add_scale_out_flags(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--ray-address``, ``--ray-actors`` (each overrides its DFF_ variable when given)."""
    group = parser.add_argument_group("scale-out (each flag overrides its DFF_ variable, e.g. DFF_BACKEND)")
    group.add_argument(
        "--backend",
        choices=("local", "ray"),
        help="where jobs run: 'local' = a worker thread in this process (default), 'ray' = actors on a Ray "
        "cluster, one model each (needs pip install 'deepfake-forensics[ray]')",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster: 'auto' = the one `ray start` runs on this machine, or HOST:PORT of its head; "
        "default: start a Ray of our own on this machine",
    )
    group.add_argument(
        "--ray-actors", type=int, metavar="N", help="engine actors in the pool, each holding one model (default 2)"
    )


def serve_settings(args: argparse.Namespace):  # -> pipeline.config.Settings
    """The server's Settings: ``DFF_*`` variables, then the analysis flags, then the serve flags given.
    ConfigError (a DffError) names the first bad value."""
    import dataclasses

    given = {name: getattr(args, name) for name in SERVE_FLAGS}
    given |= {name: getattr(args, name, None) for name in SCALE_OUT_FLAGS}  # None: the parser lacks them
    given["keep_uploads"] = given["keep_uploads"] or None  # store_true: absent must not mean False
    return dataclasses.replace(settings_from_args(args), **{k: v for k, v in given.items() if v is not None})


def serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from pipeline.errors import DffError
    from stream.auth import is_loopback
    from stream.server import create_app, make_server

    try:
        settings = serve_settings(args)
    except DffError as e:
        print(f"dff serve: {e}", file=err)
        return EXIT_USAGE
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(levelname)s %(name)s: %(message)s")
    if not settings.token and not is_loopback(settings.host):
        print(
            f"dff serve: WARNING: listening on {settings.host} without DFF_TOKEN: anyone who can reach this port "
            "can analyse files and read reports; model upload/activation is disabled",
            file=err,
        )
    app = create_app(settings, allow_untrained=args.allow_untrained)
    ui_path = mount_web_ui(app, settings)
    base = f"{settings.host}:{settings.port}"
    print(f"dff serve: websocket API ws://{base}/v1/analyze, reports http://{base}/v1/reports", file=err)
    print(f"dff serve: web UI {'http://' + base + ui_path if ui_path else 'not built yet (API only)'}", file=err)
    try:
        make_server(app, settings, log_level=args.log_level).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled, after its graceful shutdown
        return 130
    return EXIT_OK
