"""``dff serve``: one process, one port — the websocket API, the HTTP report API and the web page."""

from __future__ import annotations

import argparse
from typing import TextIO

from ui.cmd_analyze import EXIT_OK, EXIT_USAGE, settings_from_args


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
    from ui.examples import example_files

    cfg = UiConfig.from_settings(
        settings, host_is_loopback=is_loopback(settings.host), examples=example_files(settings.data_dir)
    )
    address = ServerAddress()  # the page dials its own server; the middleware learns where that is
    app.add_middleware(RecordAddress, address=address)
    gr.mount_gradio_app(app, build_blocks(cfg, address), path="/", **mount_options(cfg))
    return "/"


def serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import dataclasses
    import logging

    from pipeline.errors import DffError
    from stream.auth import is_loopback
    from stream.server import create_app, make_server

    try:
        settings = dataclasses.replace(
            settings_from_args(args),
            **{
                k: v
                for k, v in {
                    "host": args.host,
                    "port": args.port,
                    "data_dir": args.data_dir,
                    "models_dir": args.models_dir,
                    "max_upload_mb": args.max_upload_mb,
                    "max_jobs": args.max_jobs,
                    "max_queue": args.max_queue,
                    "keep_uploads": args.keep_uploads or None,
                }.items()
                if v is not None
            },
        )
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
