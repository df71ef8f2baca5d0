"""The web page: a Gradio Blocks that is a *client* of the stream service on the same port.

    ui/cmd_serve.py  mount_web_ui(app, settings):
                   app.add_middleware(RecordAddress, address=address)
                   gradio.mount_gradio_app(app, build_blocks(cfg, address), path="/", **mount_options(cfg))

Each analysis opens ``ws://<this server>/v1/analyze`` through ``ui/client.py`` (like ``dff client``) and
turns the messages into page updates as they arrive; reports, history and models go through the HTTP
API (``HttpApi``). The handlers dial their own server at the address the browser reached it at
(``ui/address.py``), so the page needs no configuration and works on port 0. The page never imports torch
or the pipeline, and building it loads no model and opens no connection.

Tabs: **Analyze** (upload, live timeline, faces, verdict, downloads), **Live** (a stream URL or the webcam:
rolling per-person timeline, current verdicts, counters, the session report), **Models** (list, upload,
activate), **History** (past reports and live sessions, reopen one). This module is layout and wiring; the
handlers are in ``ui/tab_analyze.py``, ``ui/tab_live.py`` and ``ui/tab_admin.py``, one analysis's state in
``ui/live.py``, view logic in ``ui/timeline.py`` and ``ui/live_view.py`` (pure), drawing in ``ui/svg.py``
and ``ui/cards.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ui import cards
from ui import timeline as tl
from ui.address import RecordAddress, ServerAddress
from ui.config import UiConfig
from ui.live import options_summary
from ui.tab_admin import AdminTabs
from ui.tab_analyze import AnalyzeTab
from ui.tab_live import LiveTab
from ui.theme import CSS, theme

__all__ = ["Page", "RecordAddress", "ServerAddress", "UiConfig", "build_blocks", "mount_options"]

MODE_CHOICES = [
    ("One frame every N seconds", "every_s"),
    ("N frames spread evenly", "count"),
    ("Keyframes only", "keyframes"),
    ("Every frame (slow)", "all"),
]
STRATEGY_CHOICES = [
    ("Per person (default)", "per_person"),
    ("Mean of all faces", "mean"),
    ("Most suspicious frame", "max_frame"),
    ("Confident faces (DFDC winner)", "confident"),
]
TIMELINE_JS = """
element.addEventListener('click', (event) => {
  const hit = event.target.closest('[data-seq]');
  if (hit) { const seq = Number(hit.dataset.seq); trigger('select', {index: seq, value: seq}); }
});
"""


class Page(AnalyzeTab, AdminTabs, LiveTab):
    """The page: builds the components and wires them to the handlers of the tab mixins."""

    def __init__(self, cfg: UiConfig, address: ServerAddress) -> None:
        self.cfg = cfg
        self.address = address

    # ---- layout -----------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        cfg = self.cfg
        with gr.Blocks(title="DeepFake Forensics", analytics_enabled=False, delete_cache=(900, 3600)) as blocks:
            self.state = gr.State(None)
            self.history_state = gr.State({"cursors": [None], "next": None})
            self.banner = gr.HTML("", elem_id="dff-banner")
            gr.Markdown(
                "# DeepFake Forensics\nAre the faces in this photo or video real or deepfaked? Drop a file: the "
                "verdict builds up frame by frame, with the places the model looked at.",
                elem_id="dff-title",
            )
            with gr.Row(visible=cfg.token_required, equal_height=True):
                self.token = gr.Textbox(
                    label="Access token",
                    type="password",
                    placeholder="the server's DFF_TOKEN",
                    max_lines=1,
                    scale=1,
                    min_width=260,
                    elem_id="dff-token",
                )
                gr.HTML(
                    cards.info_box(
                        "This server requires its access token for analysis, reports and models. Enter it and "
                        "press Enter; it stays in this tab only."
                    ),
                    padding=True,
                )
                gr.HTML("", min_width=0)
            with gr.Tabs(selected="analyze") as self.tabs:
                with gr.Tab("Analyze", id="analyze", render_children=True):
                    self._analyze_tab()
                with gr.Tab("Live", id="live", render_children=True):
                    self.live_tab()
                with gr.Tab("Models", id="models", render_children=True):
                    self._models_tab()
                with gr.Tab("History", id="history", render_children=True):
                    self._history_tab()
            self._wire(blocks)
        return blocks

    def _analyze_tab(self) -> None:
        cfg = self.cfg
        self.examples: gr.Examples | None = None
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                self.upload = gr.File(label="Photo or video", type="filepath", elem_id="dff-upload", height=150)
                with gr.Row():
                    self.run_btn = gr.Button("Analyze", variant="primary", elem_id="dff-run", min_width=100, scale=2)
                    self.stop_btn = gr.Button("Stop", variant="secondary", elem_id="dff-stop", min_width=80, scale=1)
                if cfg.examples:
                    self.examples = gr.Examples(
                        [[str(path)] for path in cfg.examples], inputs=[self.upload], label="Or try an example"
                    )
                self.options_note = gr.HTML(
                    options_summary(cfg.sample_mode, cfg.every_s, cfg.sample_count, cfg.max_frames, cfg.strategy,
                                    cfg.threshold or 0.5, True),
                    elem_id="dff-options-summary",
                )  # fmt: skip
                with gr.Accordion("Options", open=False, elem_id="dff-options"):
                    self.mode = gr.Radio(
                        MODE_CHOICES, value=cfg.sample_mode, label="Which frames to analyse", elem_id="dff-mode"
                    )
                    with gr.Row():
                        self.every_s = gr.Number(
                            cfg.every_s, label="N seconds", minimum=0.01, step=0.1, elem_id="dff-every-s"
                        )
                        self.count = gr.Number(
                            cfg.sample_count, label="N frames", minimum=1, precision=0, elem_id="dff-count"
                        )
                    self.max_frames = gr.Number(
                        cfg.max_frames, label="At most this many frames", minimum=1, precision=0
                    )
                    self.strategy = gr.Dropdown(
                        STRATEGY_CHOICES, value=cfg.strategy, label="Verdict strategy", elem_id="dff-strategy"
                    )
                    self.server_threshold = gr.Checkbox(
                        True,
                        label="Use the server's operating point (the model card's calibrated threshold, if any)",
                        elem_id="dff-server-threshold",
                    )
                    self.threshold = gr.Slider(
                        0.05,
                        0.95,
                        value=cfg.threshold or 0.5,
                        step=0.01,
                        label="Threshold: P(fake) at or above means FAKE",
                        interactive=False,
                        elem_id="dff-threshold",
                    )
                gr.Markdown(
                    f"Files up to {cards.human_size(cfg.max_upload_bytes)}. The server deletes uploaded media "
                    "after the analysis; reports (scores and boxes, no pixels) are kept in History.",
                    elem_classes=["dff-small"],
                )
            with gr.Column(scale=3):
                with gr.Column(visible=False) as self.result_col:
                    self.verdict_html = gr.HTML(elem_id="dff-verdict")
                    self.people_html = gr.HTML(elem_id="dff-people")
                    with gr.Row():
                        self.dl_json = gr.DownloadButton(
                            "Download report (JSON)", visible=False, size="md", elem_id="dff-dl-json"
                        )
                        self.dl_csv = gr.DownloadButton(
                            "Download faces (CSV)", visible=False, size="md", elem_id="dff-dl-csv"
                        )
                self.status = gr.HTML(cards.empty_state(), elem_id="dff-status")
                with gr.Column(visible=False) as self.video_col:
                    self.timeline = gr.HTML("", elem_id="dff-timeline", js_on_load=TIMELINE_JS)
                    self.frame_gallery = gr.Gallery(
                        label="Faces", columns=6, fit_columns=False, height=185, elem_id="dff-faces"
                    )
                    with gr.Accordion("All sampled frames (click a row to see its faces)", open=False):
                        self.frame_table = gr.Dataframe(
                            headers=list(tl.FRAME_TABLE_HEADERS), type="array", interactive=False, elem_id="dff-frames"
                        )
                with gr.Column(visible=False) as self.photo_col:
                    self.photo_annot = gr.AnnotatedImage(
                        label="Faces found (box colour = person)", elem_id="dff-photo", height=460
                    )
                    self.photo_gallery = gr.Gallery(
                        label="Where the model looked (Grad-CAM)",
                        columns=6,
                        fit_columns=False,
                        height=185,
                        elem_id="dff-heatmaps",
                    )

    def _models_tab(self) -> None:
        gr.HTML(
            cards.info_box(self.cfg.admin_note(), "warn" if self.cfg.token_required else "info"),
            elem_id="dff-auth-note",
        )
        self.models_msg = gr.HTML(elem_id="dff-models-msg")
        self.models_table = gr.Dataframe(
            headers=["Model", "Size", "Active", "SHA-256", "Model card"],
            type="array",
            interactive=False,
            elem_id="dff-models",
        )
        self.models_refresh = gr.Button("Refresh", size="sm")
        with gr.Row():
            with gr.Column():
                gr.Markdown(
                    "**Install a checkpoint.** The server loads it (`weights_only`) and runs a test forward pass "
                    "before accepting it."
                )
                self.model_file = gr.File(
                    label="Checkpoint (.pth / .pt / .h5)",
                    file_types=[".pth", ".pt", ".h5"],
                    type="filepath",
                    elem_id="dff-model-file",
                )
                self.model_name = gr.Textbox(
                    label="Install as (file name)", placeholder="my-model.pth", elem_id="dff-model-name"
                )
                self.install_btn = gr.Button("Upload and validate", variant="primary", elem_id="dff-install")
            with gr.Column():
                gr.Markdown("**Switch models.** New analyses use it; running ones finish on theirs.")
                self.activate_name = gr.Dropdown(label="Model", choices=[], elem_id="dff-activate-name")
                self.activate_btn = gr.Button("Activate", elem_id="dff-activate")

    def _history_tab(self) -> None:
        self.history_msg = gr.HTML(elem_id="dff-history-msg")
        self.history_table = gr.Dataframe(
            headers=["When", "File", "Kind", "Verdict", "Score", "Frames", "Status", "Id"],
            type="array",
            interactive=False,
            elem_id="dff-history",
        )
        with gr.Row():
            self.history_refresh = gr.Button("Refresh", size="sm")
            self.newer_btn = gr.Button("← Newer", size="sm", interactive=False)
            self.older_btn = gr.Button("Older →", size="sm", interactive=False)

    def _wire(self, blocks: gr.Blocks) -> None:
        analysis_in = [
            self.upload,
            self.mode,
            self.every_s,
            self.count,
            self.max_frames,
            self.strategy,
            self.threshold,
            self.server_threshold,
            self.token,
        ]
        analysis_out = [
            self.state, self.status, self.banner, self.video_col, self.timeline, self.frame_gallery, self.frame_table,
            self.photo_col, self.photo_annot, self.photo_gallery, self.result_col, self.verdict_html,
            self.people_html, self.dl_json, self.dl_csv,
        ]  # fmt: skip
        common = {"concurrency_limit": None, "show_progress": "hidden"}
        options_in = analysis_in[1:-1]
        self.server_threshold.change(
            lambda on: gr.Slider(interactive=not on), [self.server_threshold], [self.threshold], queue=False
        )
        for option in options_in:
            option.change(options_summary, options_in, [self.options_note], queue=False, show_progress="hidden")
        # a file the person drops (not every value change: Gradio reports one upload as several changes)
        runs = [
            self.upload.upload(self.analyze, analysis_in, analysis_out, **common),
            self.run_btn.click(self.analyze, analysis_in, analysis_out, **common),
        ]
        if self.examples is not None:  # a click on an example fills the upload box, then runs
            runs.append(self.examples.load_input_event.then(self.analyze, analysis_in, analysis_out, **common))
        self.upload.clear(lambda: cards.empty_state(), None, [self.status], queue=False)
        self.stop_btn.click(
            lambda: cards.info_box("Stopped: the server cancels the analysis.", "warn"),
            None,
            [self.status],
            cancels=runs,
            queue=False,
        )
        select_out = [self.state, self.timeline, self.frame_gallery]
        self.timeline.select(self.select_frame, [self.state], select_out, **common)
        self.frame_table.select(self.select_frame, [self.state], select_out, **common)

        models_out = [self.banner, self.models_table, self.models_msg, self.activate_name]
        self.models_refresh.click(self.refresh_models, [self.token], models_out, **common)
        self.model_file.upload(lambda f: Path(f).name if f else "", [self.model_file], [self.model_name], queue=False)
        self.install_btn.click(self.upload_model, [self.model_file, self.model_name, self.token], models_out, **common)
        self.activate_btn.click(self.activate_model, [self.activate_name, self.token], models_out, **common)

        history_out = [self.history_table, self.history_state, self.history_msg, self.older_btn, self.newer_btn]
        for button, step in ((self.history_refresh, 0), (self.older_btn, 1), (self.newer_btn, -1)):
            button.click(self.history_mover(step), [self.token, self.history_state], history_out, **common)
        self.history_table.select(self.reopen, [self.token], [self.tabs, self.history_msg, *analysis_out], **common)
        blocks.load(self.on_load, [self.token], list(dict.fromkeys(models_out + history_out)), **common)
        self.wire_live()
        if self.cfg.token_required:
            self.token.submit(self.on_load, [self.token], list(dict.fromkeys(models_out + history_out)), **common)


def build_blocks(cfg: UiConfig, address: ServerAddress) -> gr.Blocks:
    """The page. Builds components only: no model, no connection (handlers connect per request to
    ``address``, which :class:`RecordAddress` on the server app fills in)."""
    return Page(cfg, address).build()


def mount_options(cfg: UiConfig) -> dict[str, Any]:
    """Keyword arguments for ``gradio.mount_gradio_app``: look, upload cap, privacy (no run history kept
    in the browser), and no tracebacks in the page."""
    return {
        "theme": theme(),
        "css": CSS,
        "max_file_size": cfg.max_upload_bytes,
        "show_error": False,
        "run_history": False,
        "footer_links": [],
        "allowed_paths": sorted({str(path.parent) for path in cfg.examples}),
    }
