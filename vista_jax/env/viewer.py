"""One trajectory as a self-contained HTML page: question, task images, every turn (think,
tool call, tool result, output images, latency, error code and taxonomy hint), the answer
against the gold answer, the reward components and the trajectory's taxonomy label.

    html = render_html(env.trajectory())                       # a live record (PIL images)
    html = render_html(record, image_root=os.path.dirname(log)) # a record read from a log

Every piece of text from the record is HTML-escaped (model output may contain anything).
Images may be PIL images, `{"$image": "<path relative to the log>"}` references as a log
stores them, or paths (relative ones are resolved against `image_root`). With
`embed_images` they are inlined as `data:` URIs, so the page stands alone; without, a
relative path is written as the `src` unchanged (the page must sit where it resolves, e.g.
beside the log) and an absolute one as a `file://` URI. PIL images are always inlined.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from PIL import Image

from vista_jax.env.taxonomy import LABELS, Label, classify
from vista_jax.env.trajectory_log import IMAGE_KEY

_CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:1.5em auto;padding:0 1em;
 color:#222;line-height:1.4}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
.meta,.small{color:#666;font-size:.9em}
.turn{border:1px solid #ccc;border-radius:6px;margin:.8em 0;padding:.5em .8em}
.turn.blamed{border:2px solid #c0392b}
.turn h3{font-size:1em;margin:.2em 0}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-word;margin:.3em 0}
.think{font-style:italic;color:#444}
.err{color:#c0392b;font-weight:600}
.ok{color:#1e8449;font-weight:600}
img{max-width:100%;border:1px solid #ddd;margin:.3em .3em 0 0;vertical-align:top}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}
.label{display:inline-block;padding:.1em .5em;border-radius:4px;background:#eee;font-weight:700}
.label.correct{background:#d5f5e3}.label.error{background:#fadbd8}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# --- images ------------------------------------------------------------------------------

def _mime(data: bytes, path: str) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png" if path.lower().endswith(".png") else "application/octet-stream"


def _pil_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_src(ref: Any, image_root: str | None = None,
              embed_images: bool = True) -> tuple[str | None, str]:
    """(src for an <img>, or None when the image cannot be shown; a caption or the reason)."""
    if isinstance(ref, Image.Image):
        return _pil_uri(ref), f"{ref.width}x{ref.height}"
    if isinstance(ref, Mapping) and set(ref) == {IMAGE_KEY}:
        ref = ref[IMAGE_KEY]
    if not isinstance(ref, (str, os.PathLike)):
        return None, f"unrecognised image reference ({type(ref).__name__})"
    path = os.fspath(ref)
    full = path if os.path.isabs(path) else os.path.join(image_root or ".", path)
    if not embed_images:
        return (pathlib.Path(path).as_uri() if os.path.isabs(path) else path), path
    try:
        with open(full, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"missing image {path}: {e.strerror or e}"
    return f"data:{_mime(data, full)};base64,{base64.b64encode(data).decode('ascii')}", path


def _images_html(refs: Any, image_root: str | None, embed_images: bool,
                 names: list[str] | None = None) -> str:
    refs = list(refs or [])
    parts = []
    for i, ref in enumerate(refs):
        src, caption = image_src(ref, image_root, embed_images)
        name = names[i] if names and i < len(names) else None
        title = _esc(f"{name}: {caption}" if name else caption)
        if src is None:
            parts.append(f'<span class="err">[{title}]</span>')
        else:
            parts.append(f'<img src="{_esc(src)}" alt="{title}" title="{title}">')
    return f'<div>{"".join(parts)}</div>' if parts else ""


# --- page --------------------------------------------------------------------------------

def _pre(text: Any, cls: str = "") -> str:
    return f'<pre class="{cls}">{_esc(text)}</pre>' if cls else f"<pre>{_esc(text)}</pre>"


def _turn_html(i: int, turn: Mapping[str, Any], blamed: bool, image_root: str | None,
               embed_images: bool) -> str:
    kind = turn.get("kind")
    head = [f"Turn {i}", _esc(kind)]
    if turn.get("latency_s"):
        head.append(f"{float(turn['latency_s']) * 1000:.1f} ms")
    if turn.get("error"):
        head.append(f'<span class="err">error: {_esc(turn["error"])}</span>')
    if turn.get("taxonomy"):
        head.append(f'<span class="err">hint: {_esc(turn["taxonomy"])}</span>')
    if blamed:
        head.append('<span class="err">blamed by the taxonomy</span>')
    body = [f"<h3>{' · '.join(head)}</h3>"]
    if turn.get("think"):
        body.append(f'<div>think:</div>{_pre(turn["think"], "think")}')
    call = turn.get("tool_call")
    if call:
        body.append(f"<div>tool call:</div>{_pre(json.dumps(call, indent=1, default=str))}")
    result = turn.get("tool_result")
    if kind == "tool_call" and isinstance(result, Mapping):
        if result.get("ok"):
            body.append(f'<div class="ok">tool result:</div>{_pre(result.get("text", ""))}')
        else:
            err = result.get("error") or {}
            body.append(f'<div class="err">tool error [{_esc(err.get("code"))}]:</div>'
                        f'{_pre(err.get("message", ""))}')
    if kind == "answer":
        body.append(f"<div>answer:</div>{_pre(turn.get('answer'))}")
    handles = list(turn.get("image_handles") or [])
    body.append(_images_html(turn.get("images"), image_root, embed_images, handles))
    body.append(f'<details><summary class="small">raw model output</summary>'
                f'{_pre(turn.get("text", ""))}</details>')
    return f'<div class="turn{" blamed" if blamed else ""}" id="turn-{i}">{"".join(body)}</div>'


def _record_label(record: Mapping[str, Any], label: Label | None) -> Label:
    if label is not None:
        return label
    own = record.get("taxonomy")
    if isinstance(own, Mapping) and own.get("label") in LABELS:
        return Label(own["label"], str(own.get("explanation", "")), own.get("turn"))
    if isinstance(own, str) and own in LABELS:
        return Label(own, "(label stored with the record)")
    return classify(record)


def render_html(record: Mapping[str, Any], *, image_root: str | None = None,
                embed_images: bool = True, label: Label | None = None) -> str:
    """The trajectory `record` (`VistaEnv.trajectory()`, live or from a log) as one HTML
    page. `label`: its taxonomy label when already known (else the record's own, else
    `taxonomy.classify`)."""
    try:
        tax = _record_label(record, label)
    except ValueError as e:  # a malformed record still gets a page
        tax = None
        tax_html = f'<span class="err">not classified: {_esc(e)}</span>'
    if tax is not None:
        cls = "correct" if tax.label == "correct" else "error"
        where = (f' (<a href="#turn-{_esc(tax.turn)}">turn {_esc(tax.turn)}</a>)'
                 if tax.turn is not None else "")
        tax_html = (f'<span class="label {cls}">{_esc(tax.label)}</span> '
                    f"{_esc(tax.explanation)}{where}")
    turns = list(record.get("turns") or [])
    meta = " · ".join(f"{k}: {_esc(record.get(k))}" for k in
                      ("family", "split", "seed", "difficulty", "question_type", "answer_type")
                      if record.get(k) is not None)
    correct = record.get("correct")
    verdict = '<span class="ok">correct</span>' if correct else '<span class="err">wrong</span>'
    end = "answered" if record.get("terminated") else ("truncated" if record.get("truncated")
                                                       else "unfinished")
    components = record.get("reward_components") or {}
    reward_rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>"
                          for k, v in components.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(record.get('task_id', 'trajectory'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_esc(record.get('task_id', 'trajectory'))}</h1>",
        f'<div class="meta">{meta}</div>',
        "<h2>Question</h2>", _pre(record.get("question", "")),
        _images_html(record.get("images"), image_root, embed_images,
                     [f"img_{i}" for i in range(len(record.get("images") or []))]),
        f"<h2>Turns ({len(turns)})</h2>",
        *(_turn_html(i, t, tax is not None and tax.turn == i, image_root, embed_images)
          for i, t in enumerate(turns)),
        "<h2>Outcome</h2>",
        f"<table><tr><th>answer</th><td>{_esc(record.get('answer'))}</td></tr>",
        f"<tr><th>gold answer</th><td>{_esc(record.get('gold_answer'))}</td></tr>",
        f"<tr><th>verdict</th><td>{verdict} ({_esc(end)}, "
        f"{_esc(record.get('num_turns', len(turns)))} turns)</td></tr>",
        f"<tr><th>reward</th><td>{_esc(record.get('reward'))}</td></tr></table>",
        f"<h2>Reward components</h2><table>{reward_rows}</table>" if reward_rows else "",
        f"<h2>Taxonomy</h2><div>{tax_html}</div>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
