"""The page's look: a Gradio theme with the fonts Gradio ships (no web fonts fetched) and the CSS for the
``dff-*`` snippets of ``ui/cards.py`` and ``ui/svg.py``. Kept in Python so an installed package carries it."""

from __future__ import annotations

from typing import Any

CSS = """
.gradio-container { max-width: 1280px !important; margin: auto; }
#dff-title h1 { margin-bottom: 0; }
#dff-title p { margin-top: 2px; color: var(--body-text-color-subdued); }

.dff-banner { padding: 10px 14px; border-radius: 8px; margin: 4px 0; font-size: 15px; }
.dff-banner-nomodel { background: #FFF4E5; border: 1px solid #F5A623; color: #5C3B00; }
.dff-banner-untrained { background: #FDECEA; border: 1px solid #C62828; color: #7F1D1D; }

.dff-status { padding: 10px 12px; border-radius: 8px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); }
.dff-stage { font-weight: 700; margin-right: 10px; }
.dff-progress { color: var(--body-text-color); font-variant-numeric: tabular-nums; }
.dff-bar { height: 6px; background: #E5E7EB; border-radius: 3px; margin-top: 8px; overflow: hidden; }
.dff-bar-fill { height: 100%; background: #4F46E5; transition: width .3s; }
.dff-running { margin-top: 8px; font-size: 14px; }

.dff-error { padding: 12px 14px; border-radius: 8px; background: #FDECEA; border: 1px solid #E57373;
  color: #7F1D1D; }
.dff-err-title { font-weight: 700; font-size: 16px; margin-bottom: 2px; }
.dff-err-detail { margin-top: 6px; font-size: 13px; color: #9B2C2C; }
.dff-note { padding: 8px 12px; border-radius: 8px; font-size: 14px; }
.dff-note-info { background: #EEF2FF; color: #312E81; }
.dff-note-ok { background: #E8F5E9; color: #1B5E20; }
.dff-note-warn { background: #FFF4E5; color: #5C3B00; }

.dff-chart { width: 100%; }
.dff-legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 14px; margin: 2px 0 4px 56px; }
.lg-item { display: inline-flex; align-items: center; gap: 6px; }
.lg-swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; }
.lg-band { background: rgba(156, 163, 175, .35); }
.lg-seg { background: rgba(198, 40, 40, .18); }
.dff-caption { font-size: 13px; color: var(--body-text-color-subdued); margin-left: 56px; }
.dff-timeline .col { cursor: pointer; }
.dff-timeline .col:hover { fill: rgba(79, 70, 229, .07); }
.dff-timeline .pt { cursor: pointer; }

.dff-verdict { border-radius: 10px; padding: 14px 18px; border: 2px solid #9CA3AF; background: #F9FAFB; }
.dff-verdict p { margin: 6px 0; font-size: 14px; line-height: 1.45; }
.dff-v-head { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
.dff-v-title { font-size: 30px; font-weight: 800; letter-spacing: .03em; }
.dff-v-score { font-size: 20px; font-variant-numeric: tabular-nums; }
.dff-v-score small { font-size: 13px; color: #6B7280; margin-left: 6px; }
.dff-v-file { font-weight: 600; margin: 2px 0 6px; }
.dff-v-facts { font-weight: 400; color: #6B7280; margin-left: 8px; }
.dff-v-model { font-size: 12px; color: #6B7280; margin-top: 6px; word-break: break-all; }
.dff-v-fake { border-color: #C62828; background: #FDF2F2; }
.dff-v-fake .dff-v-title { color: #B71C1C; }
.dff-v-real { border-color: #2E7D32; background: #F1F8F2; }
.dff-v-real .dff-v-title { color: #1B5E20; }
.dff-v-inconclusive { border-color: #F59E0B; background: #FFFBEB; }
.dff-v-inconclusive .dff-v-title { color: #92400E; }
.dff-v-no_face .dff-v-title { color: #4B5563; }
.dff-untrained { background: #C62828; color: white; font-weight: 700; padding: 6px 10px; border-radius: 6px;
  margin-bottom: 8px; }
.dff-incomplete { background: #FFF4E5; color: #5C3B00; padding: 6px 10px; border-radius: 6px; margin-bottom: 8px; }

.dff-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 700;
  color: white; background: #6B7280; }
.dff-badge.dff-fake { background: #C62828; }
.dff-badge.dff-real { background: #2E7D32; }
.dff-badge.dff-inconclusive { background: #D97706; }

.dff-people { margin-top: 12px; }
.dff-h { font-weight: 700; margin-bottom: 6px; }
.dff-p-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr)); gap: 10px; }
.dff-det-table { border-collapse: collapse; margin-top: 6px; }
.dff-det-table td, .dff-det-table th { padding: 4px 8px; text-align: center; vertical-align: top; }
.dff-person { display: flex; gap: 10px; align-items: center; padding: 8px; border-radius: 8px;
  border: 1px solid var(--border-color-primary); background: var(--block-background-fill); }
.dff-thumb { width: 72px; height: 72px; border-radius: 6px; object-fit: cover; flex: none; }
.dff-thumb-none { display: flex; align-items: center; justify-content: center; color: white; font-size: 26px;
  font-weight: 700; }
.dff-p-name { font-weight: 700; display: flex; align-items: center; gap: 6px; margin-bottom: 3px; }
.dff-p-score { font-variant-numeric: tabular-nums; font-size: 14px; }
.dff-p-meta, .dff-p-hint { font-size: 12px; color: #6B7280; margin-top: 2px; }
#dff-auth-note { font-size: 14px; }

.dff-vrow { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 12px; align-items: start; }
@media (max-width: 900px) { .dff-vrow { grid-template-columns: minmax(0, 1fr); } }
.dff-v-pending { border-radius: 10px; padding: 14px 18px; border: 2px dashed #9CA3AF; color: #4B5563; }
.dff-v-pending .dff-v-title { font-size: 22px; }
.dff-prov { border-radius: 10px; padding: 12px 14px; border: 1px solid var(--border-color-primary);
  background: var(--block-background-fill); font-size: 13px; line-height: 1.4; overflow-wrap: anywhere; }
.dff-prov .dff-h { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; font-size: 15px; }
.dff-prov-badge { display: inline-block; padding: 2px 9px; border-radius: 10px; font-size: 12px; font-weight: 700;
  color: white; background: #6B7280; }
.dff-prov-valid .dff-prov-badge { background: #2E7D32; }
.dff-prov-untrusted .dff-prov-badge { background: #B45309; }
.dff-prov-invalid .dff-prov-badge { background: #C62828; }
.dff-prov-valid { border-left: 4px solid #2E7D32; }
.dff-prov-untrusted { border-left: 4px solid #D97706; }
.dff-prov-invalid { border-left: 4px solid #C62828; background: #FDF2F2; }
.dff-prov-absent, .dff-prov-unreadable { border-left: 4px solid #9CA3AF; }
.dff-prov-summary { font-weight: 600; margin: 4px 0 6px; }
.dff-prov-facts { border-collapse: collapse; margin: 4px 0; border: none !important; width: auto !important; }
.dff-prov-facts th { text-align: left; font-weight: 600; color: #6B7280; padding: 1px 10px 1px 0;
  white-space: nowrap; vertical-align: top; }
.dff-prov-facts td { padding: 1px 0; }
.dff-prov-facts tr, .dff-prov-facts th, .dff-prov-facts td { border: none !important; background: none !important; }
.dff-prov-sec { margin-top: 6px; }
.dff-prov-sec ul { margin: 2px 0 0; padding-left: 18px; }
.dff-prov-dst { background: #EEF2FF; color: #312E81; border-radius: 4px; padding: 0 4px; }
.dff-prov-tags { max-height: 220px; overflow: auto; }
.dff-prov-tags table { border-collapse: collapse; font-size: 12px; width: 100%; }
.dff-prov-tags tr, .dff-prov-tags th, .dff-prov-tags td { text-align: left; padding: 1px 6px; border: none !important;
  border-bottom: 1px solid #E5E7EB !important;
  vertical-align: top; }
.dff-prov-note { font-size: 12px; color: #6B7280; margin: 8px 0 0; }
.dff-empty { padding: 18px 22px; border-radius: 10px; border: 1px dashed var(--border-color-primary);
  color: var(--body-text-color); font-size: 15px; line-height: 1.5; }
.dff-empty-title { font-weight: 700; font-size: 17px; margin-bottom: 6px; }
.dff-empty ul { margin: 0; padding-left: 20px; }
"""


def theme() -> Any:
    """Gradio's default theme in indigo, with the fonts bundled in the gradio wheel (works offline)."""
    import gradio as gr

    return gr.themes.Default(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate")
