"""The Models and History tabs' handlers (and the page's load): the top banner from ``/healthz``, the
checkpoint list, upload and activation through the HTTP model routes, and past reports paged and
reopened on the Analyze tab. A mixin of ``ui.app.Page``, which creates the components."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import gradio as gr

from stream import protocol as p
from ui import cards
from ui import timeline as tl
from ui.address import ServerAddress
from ui.client import ClientError, HttpApi
from ui.config import UiConfig
from ui.live import Session, download_files

HISTORY_PAGE = 15  # reports per History page


class AdminTabs:
    """Handlers of the Models and History tabs. Uses the Analyze tab's renderers to reopen a report."""

    cfg: UiConfig
    address: ServerAddress
    tabs: gr.Tabs
    state: gr.State
    banner: gr.HTML
    status: gr.HTML
    video_col: gr.Column
    timeline: gr.HTML
    dl_json: gr.DownloadButton
    dl_csv: gr.DownloadButton
    models_msg: gr.HTML
    models_table: gr.Dataframe
    activate_name: gr.Dropdown
    history_msg: gr.HTML
    history_table: gr.Dataframe
    history_state: gr.State
    older_btn: gr.Button
    newer_btn: gr.Button
    # from AnalyzeTab
    reset_updates: Callable[[str], dict[str, Any]]
    final_updates: Callable[[Session, HttpApi | None], dict[str, Any]]
    timeline_value: Callable[[Session], str]

    # ---- page load, models ------------------------------------------------------------------------

    async def banner_value(self, api: HttpApi) -> str:
        """The top banner from ``/healthz``: no model, an untrained one, or nothing (but its state)."""
        health = await api.healthz()
        if health.get("status") == "no_model" or not health.get("model"):
            return cards.no_model_banner()
        model = health["model"]
        return cards.untrained_banner(model["name"]) if model.get("untrained") else cards.ready_marker(health["status"])

    async def refresh_models(self, token: str | None, select: str | None = None) -> dict[str, Any]:
        """The Models tab: checkpoints, the active one, the activate choices (``select`` picked, else the
        active model), and the top banner."""
        try:
            api = HttpApi(self.address.get(), token)
            banner = await self.banner_value(api)  # /healthz needs no token
        except ClientError as err:
            return {
                self.models_msg: cards.error_box(err.code, str(err)),
                self.banner: cards.error_box(err.code, str(err)),
            }
        try:
            listing = await api.models()
        except ClientError as err:
            return {self.models_msg: cards.error_box(err.code, str(err)), self.banner: banner}
        active = listing.get("active")
        rows = []
        for m in listing.get("models", []):
            sha = m.get("sha256") or (active["sha256"] if active and m.get("active") else "")
            card_text = cards.model_card_text(m.get("card"), m.get("card_status", "none"))
            rows.append(
                [m["name"], cards.human_size(m["size_bytes"]), "✓ active" if m.get("active") else "", sha, card_text]
            )
        if active:
            flag = " — UNTRAINED (random weights)" if active.get("untrained") else ""
            summary = cards.info_box(
                f"Active model: {active['name']} on {active['device']}, sha256 {active['sha256']}{flag}",
                "warn" if flag else "info",
            )
        else:
            summary = cards.info_box(
                f"No model is active: upload a checkpoint below, then activate it. {cards.get_model_hint()}", "warn"
            )
        names = [m["name"] for m in listing.get("models", [])]
        if active and active["name"] not in names:  # loaded with --checkpoint from outside the models directory
            rows.insert(0, [active["name"], "—", "✓ active (--checkpoint)", active["sha256"], ""])
        pick = next((n for n in (select, active and active["name"]) if n in names), names[0] if names else None)
        return {
            self.banner: banner,
            self.models_table: gr.Dataframe(value=rows),
            self.models_msg: summary,
            self.activate_name: gr.Dropdown(choices=names, value=pick),
        }

    async def upload_model(self, path: str | None, name: str, token: str | None) -> dict[str, Any]:
        if not path:
            message = "Choose a checkpoint file (.pth, .pt or .h5) first."
            return {self.models_msg: cards.error_box("bad_request", message)}
        name = (name or Path(path).name).strip()
        try:
            api = HttpApi(self.address.get(), token, timeout_s=600)
            result = await api.put_model(name, path)
        except ClientError as err:
            return {self.models_msg: _model_error(err, "Upload")}
        update = await self.refresh_models(token, select=result["name"])
        update[self.models_msg] = (
            cards.info_box(
                f"Installed {result['name']} ({cards.human_size(result['size_bytes'])}, sha256 "
                f"{result['sha256'][:16]}…): it passed the server's load and test forward pass. Activate it to use it.",
                "ok",
            )
            + update[self.models_msg]
        )
        return update

    async def activate_model(self, name: str | None, token: str | None) -> dict[str, Any]:
        if not name:
            return {self.models_msg: cards.error_box("bad_request", "Pick a model to activate.")}
        try:
            api = HttpApi(self.address.get(), token, timeout_s=600)
            result = await api.activate(name)
        except ClientError as err:
            return {self.models_msg: _model_error(err, "Activation")}
        update = await self.refresh_models(token)
        active = result["active"]
        update[self.models_msg] = cards.info_box(
            f"{active['name']} is now the model for new analyses (jobs already running finish on theirs).", "ok"
        ) + cards.info_box(f"Active model: {active['name']} on {active['device']}, sha256 {active['sha256']}")
        return update

    # ---- history ----------------------------------------------------------------------------------

    async def history_page(self, token: str | None, cursors: list[str | None]) -> dict[str, Any]:
        """The page of past jobs that starts at ``cursors[-1]`` (None = newest)."""
        try:
            api = HttpApi(self.address.get(), token)
            page = await api.reports(HISTORY_PAGE, cursors[-1] if cursors else None)
        except ClientError as err:
            return {self.history_msg: cards.error_box(err.code, str(err))}
        rows = []
        for r in page.reports:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_s))
            label = tl.LABEL_TITLES[r.label] if r.label else "—"
            score = "" if r.score is None else f"{r.score:.2f}"
            status = r.status if r.error is None else f"{r.status}: {r.error.code}"
            rows.append([when, r.name, r.kind, label, score, r.n_frames, status, r.id])
        note = "No reports yet." if not rows and len(cursors) <= 1 else "Click a row to reopen that report."
        return {
            self.history_table: gr.Dataframe(value=rows),
            self.history_state: {"cursors": cursors or [None], "next": page.next},
            self.history_msg: cards.info_box(note),
            self.older_btn: gr.Button(interactive=page.next is not None),
            self.newer_btn: gr.Button(interactive=len(cursors) > 1),
        }

    async def history_move(self, token: str | None, hist: dict[str, Any], step: int) -> dict[str, Any]:
        cursors = list(hist.get("cursors") or [None])
        if step > 0 and hist.get("next"):
            cursors.append(hist["next"])
        elif step < 0 and len(cursors) > 1:
            cursors.pop()
        elif step == 0:
            cursors = [None]
        return await self.history_page(token, cursors)

    async def reopen(self, token: str | None, evt: gr.SelectData) -> dict[str, Any]:
        """Reopen a past report on the Analyze tab: its timeline, verdict and per-person rows."""
        row = evt.row_value or []
        if not row:
            return {}
        job_id = str(row[-1])
        s = Session(job_id=job_id, name=str(row[1]), band=self.cfg.band)
        try:
            api = HttpApi(self.address.get(), token)
            stored = await api.frames(job_id)
            s.frames = tl.frames_from_rows(job_id, stored.frames)
            status = stored.status
            if status == "done":
                s.report = await api.report(job_id)
        except (ClientError, p.ProtocolError) as err:
            return {self.history_msg: cards.error_box(getattr(err, "code", "internal"), str(err))}
        update = self.reset_updates("")
        update[self.tabs] = gr.Tabs(selected="analyze")
        update[self.state] = s
        if s.report is None:
            # a job that did not finish: its frames, no verdict
            s.threshold = self.cfg.threshold or 0.5  # unknown for an unfinished job: the timeline's band only
            update[self.status] = cards.info_box(
                f"{s.name}: this job ended as '{status}', so it has no verdict. Its {len(s.frames)} analysed "
                "frames are shown.",
                "warn",
            )
            if s.frames:
                update[self.video_col] = gr.Column(visible=True)
                update[self.timeline] = self.timeline_value(s)
            return update
        s.threshold = s.report.threshold
        update.update(self.final_updates(s, api))
        note = "Reopened from History: heatmaps are not stored with reports, so faces show without them."
        if s.is_image:
            note = "Reopened from History: the photo itself is not kept on the server (privacy)."
        update[self.status] = cards.status_html("Report", f"{s.name} — {note}")
        try:
            json_path, csv_path = await download_files(api, s)
            update[self.dl_json] = gr.DownloadButton(value=json_path, visible=True)
            update[self.dl_csv] = gr.DownloadButton(value=csv_path, visible=True)
        except ClientError:
            pass
        return update

    async def on_load(self, token: str | None) -> dict[str, Any]:
        update = await self.refresh_models(token)
        update.update(await self.history_page(token, [None]))
        return update

    def history_mover(self, step: int) -> Callable[[str | None, dict[str, Any]], Awaitable[dict[str, Any]]]:
        """A handler for Refresh (0), Older (1) or Newer (-1)."""

        async def move(token: str | None, hist: dict[str, Any]) -> dict[str, Any]:
            return await self.history_move(token, hist, step)

        return move


def _model_error(err: ClientError, action: str) -> str:
    """A refused model upload/activation, in words: auth problems get their own hint."""
    if err.code in ("unauthorized", "forbidden", "connect"):
        return cards.error_box(err.code, str(err))
    titles = {"exists": "A model with that name exists", "bad_checkpoint": "Not a usable checkpoint"}
    return cards.error_box(err.code, str(err), title=titles.get(err.code, f"{action} refused"))
