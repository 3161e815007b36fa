"""See inside a trained model: how every neuron fires at every character of a text, as one web page.

    trace(model, vocab, text)     every layer's hidden state h (and an LSTM's cell state c) after each
                                  character, and the five most likely next characters
    text_features(text)           simple properties of the text at each character: position in the line,
                                  inside quotes, bracket depth, indentation, inside a C comment, inside a URL
    rank_neurons(trace, features) the neurons whose activations correlate best with each property
    render_page(...)              one self-contained HTML file that draws all of it with a small script

One convention throughout: what is shown at character j describes the moment right after the model read
j. The state is the state after reading j, the predictions are for character j + 1, and the features
say what a reader knows at that point (after an opening quote we are inside the quotes, after the
closing one we are out).

The page carries its data once, compactly: activations quantised to int8 per neuron (each neuron's
largest magnitude maps to 127) and base64-encoded, laid out neuron by neuron so that recolouring the
text for another neuron reads one contiguous slice. The script builds the DOM once and afterwards only
changes background colours.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from rnnlm.checkpoint import Checkpoint
from rnnlm.errors import RnnlmError
from rnnlm.inference import eval_mode, load_model, start_ids, start_state
from rnnlm.model import CharRNN
from rnnlm.state import State, tensors
from rnnlm.vocab import EOS_ID, Vocab

Kind = Literal["h", "c"]
TOP = 5  # predicted next characters shown under each character
DEFAULT_CHARS = 3000

LINE_POSITION, QUOTES, BRACKETS, INDENT, COMMENT, URL = (
    "line position", "inside quotes", "bracket depth", "indentation", "inside comment", "inside URL")
FEATURES = (LINE_POSITION, QUOTES, BRACKETS, INDENT, COMMENT, URL)


# ---------------------------------------------------------------------------------------------------
# Running the model


@dataclass
class Trace:
    text: str
    """The N characters read, as shown on the page."""
    cell: str
    """rnn, lstm or gru."""
    states: dict[str, np.ndarray]
    """"h" (and "c" for an LSTM): (L, N, H) float32, each layer's state after reading each character."""
    top_ids: np.ndarray
    """(N, K) vocabulary ids of the K most likely next characters after each character, most likely first."""
    top_probs: np.ndarray
    """(N, K) their probabilities."""
    next_ids: np.ndarray
    """(N,) the vocabulary id of the character that actually came next (-1 after the last)."""
    next_prob: np.ndarray
    """(N,) the probability the model gave it (NaN after the last)."""
    unknown: list[str]
    """Characters of the text the vocabulary lacks (read as <unk>)."""
    first_prob: float = math.nan
    """The probability the model gave the first character, from what it read before it (<eos>, a newline); NaN
    when it read nothing before (a stream model read from the state training carried)."""
    end_prob: float = math.nan
    """For a records text whose last line has no newline: the probability of the <eos> that ends it."""

    @property
    def bits_per_char(self) -> float:
        """Over every symbol the model predicted, the first character and a last record's <eos> too: what `rnnlm
        eval` scores of the same file."""
        ends = [q for q in (self.first_prob, self.end_prob) if not math.isnan(q)]
        p = np.concatenate([self.next_prob[:-1], ends])
        return float(-np.log2(np.maximum(p, 1e-30)).mean()) if len(p) else math.nan


@torch.no_grad()
def trace(model: CharRNN, vocab: Vocab, text: str, records: bool = False, reset_at_eos: bool = False,
          top: int = TOP, start: State | None = None) -> Trace:
    """Read `text` one character at a time and record every layer's state after each one.

    The cells return only the last step's state of each layer, so stepping one character at a time is
    what yields every layer's h (and c) at every character. A model trained on records (one per line)
    reads `<eos>` first and in place of each newline, as in training; `reset_at_eos` starts every record
    from the zero state (for `data.records=pad`, where each record was read on its own). A stream model
    reads the text from `start` (one row of state, see `rnnlm.inference.start_state`) as `rnnlm sample` reads a
    prime, or if `start` is None from the zero state after a newline (`<eos>` without one), as `rnnlm eval` reads
    a file.
    """
    if not text:
        raise RnnlmError("no text to read: give a non-empty --file or --text")
    ids = vocab.encode(text)
    unknown = vocab.unknown(text)
    offset = 0
    if records:  # <eos> r1 <eos> r2 ...: text character j is input j + 1
        newline = torch.from_numpy(np.array(list(text)) == "\n")
        ids = torch.cat([torch.tensor([EOS_ID]), ids.masked_fill(newline, EOS_ID)])
        unknown = [c for c in unknown if c != "\n"]
        offset = 1
    elif start is not None:  # the text starts a line, after the state left by earlier text, as a prime does
        ids = start_ids(vocab, text, records=False, warm=True)
        offset = len(ids) - len(text)
    else:  # from zero after the start id, as `rnnlm eval` reads a file: its first character is predicted too
        ids = torch.cat([start_ids(vocab, "", records=False), ids])
        offset = 1
    device = model.decoder.weight.device
    cfg = model.cfg
    kinds = ("h", "c") if cfg.cell == "lstm" else ("h",)
    steps = len(ids)
    states = {k: torch.empty(cfg.num_layers, steps, cfg.hidden_size) for k in kinds}  # (L, T, H)
    probs = torch.empty(steps, len(vocab))  # (T, V)
    zero = model.init_state(1, device)
    state = zero if start is None or records else start
    inputs = ids.to(device)
    with eval_mode(model):
        for t in range(steps):
            if reset_at_eos and int(ids[t]) == EOS_ID:
                state = zero
            logits, state = model(inputs[t].view(1, 1), state)
            for k, s in zip(kinds, tensors(state)):
                states[k][:, t] = s[:, 0].float().cpu()  # (L, H)
            probs[t] = logits[0, 0].float().softmax(-1).cpu()

    probs_before = probs[offset - 1] if offset else None  # after what was read before the text
    probs = probs[offset:]  # (N, V)
    k = min(top, len(vocab))
    top_probs, top_ids = probs.topk(k, dim=-1)
    next_ids = torch.cat([ids[offset + 1:], torch.tensor([-1])])
    next_prob = torch.full((len(text),), math.nan)
    next_prob[:-1] = probs[:-1].gather(1, next_ids[:-1, None]).squeeze(1)
    first = float(probs_before[int(ids[offset])]) if probs_before is not None else math.nan
    end = float(probs[-1, EOS_ID]) if records and not text.endswith("\n") else math.nan
    return Trace(text, cfg.cell, {name: s[:, offset:].numpy() for name, s in states.items()},
                 top_ids.numpy(), top_probs.numpy(), next_ids.numpy(), next_prob.numpy(), unknown, first, end)


# ---------------------------------------------------------------------------------------------------
# Properties of the text, and the neurons that track them

_URL = re.compile(r"""(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>"'`()\[\]{}]+""")


def text_features(text: str) -> dict[str, np.ndarray]:
    """Each property as a float array of one value per character, the value right after reading it.

    line position   characters read since the last newline (0 at the newline itself)
    inside quotes   1 from an opening double quote up to (not including) its closing one; backslash
                    escapes count as in C, and quotes inside comments do not count
    bracket depth   ( [ { open minus closed so far (never below 0), outside comments
    indentation     the width of the current line's leading whitespace (a tab reaches the next multiple
                    of 8), as far as it has been read
    inside comment  1 inside a C comment: from the second character of `/*` or `//` (but not `://`) to
                    just before the `/` of `*/`, or to just before the newline
    inside URL      1 on the characters of an http(s)://, ftp:// or www. address
    """
    n = len(text)
    column, quotes, depth_of, indent_of, comment = (np.zeros(n, dtype=np.float32) for _ in range(5))
    mode: Literal["code", "string", "line", "block"] = "code"
    col = depth = indent = opened = 0
    leading, escaped, prev = True, False, ""
    for j, ch in enumerate(text):
        if ch == "\n":
            col, indent, leading = 0, 0, True
        else:
            col += 1
            if leading and ch in " \t":
                indent = indent + 1 if ch == " " else (indent // 8 + 1) * 8
            else:
                leading = False
        closed = False
        if mode == "code":
            if ch == '"' and not _in_character_literal(text, j):
                mode = "string"
            elif prev == "/" and ch in "/*" and not (ch == "/" and text[j - 2:j - 1] == ":"):  # `://` is a URL
                mode, opened = ("line" if ch == "/" else "block"), j
        elif mode == "string":
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                mode = "code"
        elif mode == "line":
            if ch == "\n":
                mode = "code"
        elif prev == "*" and ch == "/" and j - 1 > opened:  # `/*/` does not close: that `*` opened it
            mode, closed = "code", True
        if mode in ("code", "string"):
            depth = depth + 1 if ch in "([{" else max(0, depth - 1) if ch in ")]}" else depth
        column[j], depth_of[j], indent_of[j] = col, depth, indent
        quotes[j] = mode == "string"
        comment[j] = mode in ("line", "block")
        prev = "" if closed else ch  # the `/` of `*/` opens nothing: `*//x` is no line comment
    url = np.zeros(n, dtype=np.float32)
    for m in _URL.finditer(text):
        url[m.start():m.end() - (len(m.group()) - len(m.group().rstrip(".,;:!?")))] = 1
    return {LINE_POSITION: column, QUOTES: quotes, BRACKETS: depth_of, INDENT: indent_of, COMMENT: comment, URL: url}


def _in_character_literal(text: str, j: int) -> bool:
    """Whether the quote at j is C's character '"' (or '\\"'), which opens no string."""
    return text[j + 1:j + 2] == "'" and (text[j - 1:j] == "'" or text[max(0, j - 2):j] == "'\\")


@dataclass(frozen=True)
class Neuron:
    layer: int
    index: int
    kind: Kind = "h"

    def __str__(self) -> str:
        return f"{self.layer}:{self.index}" + (":c" if self.kind == "c" else "")


@dataclass(frozen=True)
class Match:
    feature: str
    neuron: Neuron
    correlation: float
    """Pearson correlation of the neuron's activation with the feature over the text."""


def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of acts (M, N) with feature (N,); 0 for a constant row. -> (M,)"""
    a = acts - acts.mean(axis=1, keepdims=True)
    f = feature - feature.mean()
    denom = np.sqrt((a * a).sum(axis=1) * (f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a @ f) / denom
    return np.nan_to_num(r, nan=0.0)


def rank_neurons(states: dict[str, np.ndarray], features: dict[str, np.ndarray], per_feature: int = 3) -> list[Match]:
    """The `per_feature` neurons with the largest |correlation| with each feature that varies over the text,
    features ordered by their best match, the strongest first. states: kind -> (L, N, H)."""
    rows, neurons = [], []
    for kind, s in states.items():
        layers, _, hidden = s.shape
        rows.append(s.transpose(0, 2, 1).reshape(layers * hidden, -1))  # (L*H, N)
        neurons += [Neuron(layer, index, kind)  # type: ignore[arg-type]
                    for layer in range(layers) for index in range(hidden)]
    acts = np.concatenate(rows).astype(np.float64)
    groups = []
    for name, values in features.items():
        if len(np.unique(values)) < 2:
            continue  # nothing to correlate with: e.g. no comments in Shakespeare
        r = correlations(acts, values.astype(np.float64))
        best = np.argsort(-np.abs(r), kind="stable")[:per_feature]
        if r[best[0]] != 0:  # no neuron varies with it (a forced checkpoint's NaN states): none tracks it
            groups.append([Match(name, neurons[i], float(r[i])) for i in best])
    groups.sort(key=lambda g: -abs(g[0].correlation))
    return [m for g in groups for m in g]


def parse_neuron(spec: str, cell: str, num_layers: int, hidden_size: int) -> Neuron:
    """`LAYER:INDEX` (hidden state h) or `LAYER:INDEX:c` (an LSTM's cell state), layers counted from 0."""
    parts = spec.split(":")
    kind = parts.pop() if len(parts) == 3 else "h"
    try:
        layer, index = (int(p) for p in parts)
    except ValueError:
        raise RnnlmError(f"--neuron {spec!r}: expected LAYER:INDEX or LAYER:INDEX:c, e.g. 0:12") from None
    if kind not in ("h", "c") or (kind == "c" and cell != "lstm"):
        article = "an" if cell == "rnn" else "a"
        raise RnnlmError(f"--neuron {spec!r}: the state kind is h" + (
            " or c" if cell == "lstm" else f" ({article} {cell.upper()} has no cell state)"))
    if not (0 <= layer < num_layers and 0 <= index < hidden_size):
        raise RnnlmError(f"--neuron {spec!r}: this model has layers 0..{num_layers - 1} "
                         f"and neurons 0..{hidden_size - 1} in each")
    return Neuron(layer, index, kind)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# The page


def quantise(states: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """int8 activations (K, L, H, N) and float32 scales (K, L, H): value = q * scale / 127."""
    acts = np.stack([s.transpose(0, 2, 1) for s in states.values()])  # (K, L, H, N)
    acts = np.where(np.isfinite(acts), acts, 0.0)  # a forced checkpoint's NaN states are drawn as no activation
    scale = np.abs(acts).max(axis=3) if acts.shape[3] else np.ones(acts.shape[:3])
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(acts / scale[..., None] * 127), -127, 127).astype(np.int8)
    return q, scale


def display_char(token: str) -> str:
    """How a vocabulary entry looks in the predictions: visible symbols for whitespace and specials."""
    return {"\n": "↵", " ": "␣", "\t": "⇥", "\r": "\\r", "<eos>": "↵", "<unk>": "\ufffd"}.get(
        token, token if token.isprintable() else "·")


def _rank_of_next(tr: Trace) -> np.ndarray:
    """(N,) where the character that came next stands among the top predictions, -1 if not among them."""
    hits = tr.top_ids == tr.next_ids[:, None]  # (N, K)
    return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def render_page(tr: Trace, vocab: Vocab, matches: list[Match], neuron: Neuron, title: str, subtitle: str = "") -> str:
    """One self-contained HTML page (no network): the coloured text, predictions, picker and ranked neurons."""
    q, scale = quantise(tr.states)
    layers, hidden = q.shape[1], q.shape[2]
    data = {
        "text": tr.text, "cell": tr.cell, "kinds": list(tr.states), "layers": layers, "hidden": hidden,
        # an LSTM's cell state and a ReLU RNN's h are unbounded: the page colours them scaled by their
        # largest magnitude on the text, or by tanh(value)
        "squash": [k == "c" or tr.cell == "rnn" and float(np.abs(tr.states[k]).max(initial=0)) > 1
                   for k in tr.states],
        "acts": _b64(q, "<i1"), "scales": _b64(scale, "<f4"),
        "vocab": [display_char(t) for t in vocab.itos], "top": _b64(tr.top_ids, "<u2"),
        "topp": _b64(np.rint(np.nan_to_num(tr.top_probs) * 255), "<u1"), "next": _b64(tr.next_prob, "<f4"),
        "hit": _b64(_rank_of_next(tr), "<i1"),
        "matches": [{"feature": m.feature, "kind": m.neuron.kind, "layer": m.neuron.layer, "index": m.neuron.index,
                     "r": round(m.correlation, 3)} for m in matches],
        "neuron": {"kind": neuron.kind, "layer": neuron.layer, "index": neuron.index},
    }
    # JSON inside <script> must not contain "</" (it would end the element early); \u003c reads back as "<"
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    values = {"TITLE": html.escape(title), "SUBTITLE": html.escape(subtitle), "DATA": payload}
    return re.sub(r"__(TITLE|SUBTITLE|DATA)__", lambda m: values[m.group(1)], _PAGE)  # one pass: no value is rescanned


@dataclass
class Page:
    html: str
    trace: Trace
    matches: list[Match]
    neuron: Neuron
    truncated: bool
    """True when the text was cut to `chars` characters."""

    def best_matches(self) -> list[str]:
        """One line per property: the neuron that tracks it best."""
        best = {m.feature: m for m in reversed(self.matches)}  # the first match of each feature wins
        return [f"{m.feature:<15} best tracked by {m.neuron} (r = {m.correlation:+.2f})"
                for m in sorted(best.values(), key=lambda m: -abs(m.correlation))]


def page_for_checkpoint(point: Checkpoint, text: str, neuron: str | None = None, chars: int | None = DEFAULT_CHARS,
                        title: str | None = None, force: bool = False) -> Page:
    """Everything `rnnlm viz` does, short of writing the file: load the model, read the text, rank, render."""
    if chars is not None and chars < 1:
        raise RnnlmError(f"--chars {chars}: show at least 1 character")
    if point.records:  # a CR LF file's records, as training reads them (each CR read as <unk> before its <eos>)
        text = text.replace("\r\n", "\n")
    truncated = chars is not None and len(text) > chars
    text = text[:chars] if truncated else text
    cfg = point.config.model
    chosen = parse_neuron(neuron, cfg.cell, cfg.num_layers, cfg.hidden_size) if neuron is not None else None
    model = load_model(point, force=force)
    tr = trace(model, point.vocab, text, records=point.records,
               reset_at_eos=point.records and point.config.data.records == "pad", start=start_state(point))
    matches = rank_neurons(tr.states, text_features(text))
    chosen = chosen or (matches[0].neuron if matches else Neuron(cfg.num_layers - 1, 0))
    path = Path(point.path).resolve()  # `rnnlm viz .` in a run folder: named after the folder
    name = path.parent.name if path.name in ("best.pt", "last.pt") else path.name
    scored = f" · {tr.bits_per_char:.3f} bits per character on this text" if math.isfinite(tr.bits_per_char) else ""
    subtitle = (f"{cfg.num_layers}×{cfg.hidden_size} {cfg.cell.upper()}, step {point.step:,} · {len(text):,} "
                f"character{'s' if len(text) != 1 else ''}{scored}")
    return Page(render_page(tr, point.vocab, matches, chosen, title or name, subtitle), tr, matches, chosen, truncated)


_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · rnnlm viz</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fff; }
  header { position: sticky; top: 0; z-index: 2; background: #f7f7f7; border-bottom: 1px solid #ddd; padding: 8px 16px; }
  h1 { font-size: 16px; margin: 0 8px 0 0; display: inline; }
  .sub { color: #666; }
  .controls { margin-top: 6px; display: flex; flex-wrap: wrap; gap: 14px; align-items: center; }
  .controls label { white-space: nowrap; }
  select, input, button { font: inherit; }
  input[type=number] { width: 5em; }
  .legend { display: inline-flex; align-items: center; gap: 4px; color: #555; }
  .legend .bar { width: 120px; height: 12px; border: 1px solid #ccc; }
  main { display: flex; align-items: flex-start; }
  #text { flex: 1; padding: 12px 16px; font: 14px/1.25 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
          tab-size: 4; -moz-tab-size: 4; }
  #text .k { display: inline-block; vertical-align: top; white-space: pre; }
  #text .c { display: block; }
  #text .p, #text .a { display: block; font-size: 11px; line-height: 13px; color: #333; text-align: center; }
  #text .a { height: 6px; margin-bottom: 6px; }
  #text.compact .p, #text.compact .a { display: none; }
  #text .k.on .c { outline: 1px solid #000; }
  aside { width: 300px; flex: none; padding: 12px 16px; border-left: 1px solid #ddd; position: sticky; top: 0;
          box-sizing: border-box; max-height: 100vh; overflow: auto; }
  aside h2 { font-size: 14px; margin: 0 0 6px; }
  aside p { color: #666; margin: 0 0 8px; font-size: 12px; }
  #ranked { list-style: none; padding: 0; margin: 0; }
  #ranked li { padding: 3px 6px; cursor: pointer; border-radius: 3px; }
  #ranked li:hover { background: #eee; }
  #ranked li.sel { background: #dde8f5; }
  #ranked .f { color: #666; font-size: 12px; display: block; margin-top: 6px; }
  #ranked .r { float: right; font-variant-numeric: tabular-nums; }
  #tip { position: fixed; z-index: 3; display: none; background: #fff; border: 1px solid #999; border-radius: 4px;
         padding: 6px 8px; font-size: 12px; box-shadow: 0 2px 6px rgba(0,0,0,.2); pointer-events: none; white-space: nowrap; }
  #tip table { border-collapse: collapse; font-family: ui-monospace, monospace; }
  #tip td { padding: 0 4px; }
  #tip .hit { font-weight: bold; color: #176b2c; }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1><span class="sub">__SUBTITLE__</span>
  <div class="controls">
    <label>layer <select id="layer"></select></label>
    <label id="kind-label">state <select id="kind"></select></label>
    <label>neuron <input id="index" type="number" min="0" step="1"></label>
    <button id="prev" title="previous neuron">◀</button><button id="next" title="next neuron">▶</button>
    <label id="scale-label">colour by <select id="scale"><option value="max">value ÷ max |value|</option>
      <option value="tanh">tanh(value)</option></select></label>
    <span class="legend">−1 <span class="bar" id="legend"></span> +1</span>
    <label><input type="checkbox" id="preds"> predictions under each character</label>
    <span id="status" class="sub"></span>
  </div>
</header>
<main>
  <div id="text" class="compact"></div>
  <aside>
    <h2>Neurons that track the text</h2>
    <p>Largest |Pearson correlation| of a neuron's activation with a property of the text, per property.
       Click one to colour the text by it.</p>
    <ol id="ranked"></ol>
    <h2 style="margin-top:14px">Reading the page</h2>
    <p>Each character is coloured by the chosen neuron's value right after the model read it
       (blue negative, white zero, red positive). Cell states are unbounded: they are coloured by their
       value divided by their largest magnitude on this text, or (pick it above) by tanh of their value,
       the way the cell passes them on.
       Hover a character for the numbers and the five characters the model thought most likely to come next.
       Tick "predictions" to show those under every character, shaded by probability (green: the one that
       came), with a bar as high as the probability it gave the character that did come.</p>
  </aside>
</main>
<div id="tip"></div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const bytes = (b64) => { const s = atob(b64), a = new Uint8Array(s.length);
                           for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a; };
  const chars = Array.from(D.text);  // code points, as Python counts them
  const N = chars.length, L = D.layers, H = D.hidden, K = D.kinds.length;
  const acts = new Int8Array(bytes(D.acts).buffer);          // (K, L, H, N)
  const scales = new Float32Array(bytes(D.scales).buffer);   // (K, L, H)
  const topIds = new Uint16Array(bytes(D.top).buffer);       // (N, T)
  const topP = bytes(D.topp);                                // (N, T), probability * 255
  const nextP = new Float32Array(bytes(D.next).buffer);      // (N,)
  const hit = new Int8Array(bytes(D.hit).buffer);            // (N,) rank of the next character among the T, or -1
  const T = N ? topIds.length / N : 0;
  const NEG = [49, 112, 181], POS = [214, 67, 52];
  const $ = (id) => document.getElementById(id);
  const esc = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

  // --- build the text once: per character a column with the character, its predictions and a bar ---------------
  const parts = [];
  for (let j = 0; j < N; j++) {
    const ch = chars[j];
    const shown = ch === "\n" ? "↵" : ch === "\r" ? "\\r" : esc(ch);  // CR's control picture is in few fonts: a box
    let next = "", stops = [];
    for (let t = 0; t < T; t++) {
      const id = topIds[j * T + t], p = topP[j * T + t] / 255;
      next += (t ? "\n" : "") + esc(D.vocab[id]);
      const col = hit[j] === t ? `rgba(40,160,70,${(0.25 + 0.75 * p).toFixed(3)})` : `rgba(90,110,140,${(p * 0.8).toFixed(3)})`;
      stops.push(`${col} ${t * 100 / T}% ${(t + 1) * 100 / T}%`);
    }
    const q = nextP[j], bar = Number.isNaN(q) ? 0 : Math.round(q * 100);
    parts.push(`<span class="k"><span class="c">${shown}</span><span class="p" style="background:linear-gradient(${stops.join(",")})">${next}</span>` +
               `<span class="a" style="background:linear-gradient(to top,#2a9d4a ${bar}%,transparent ${bar}%)"></span></span>` +
               (ch === "\n" ? "<br>" : ""));
  }
  const textEl = $("text");
  textEl.innerHTML = parts.join("");
  const cells = Array.from(textEl.querySelectorAll(".c"));
  const cols = cells.map((c) => c.parentNode);
  cols.forEach((c, j) => { c.dataset.i = j; });

  // the side panel sticks just below the header, whose height depends on how its controls wrap
  function fitAside() {
    const aside = document.querySelector("aside"), top = document.querySelector("header").offsetHeight;
    aside.style.top = top + "px";
    aside.style.maxHeight = (innerHeight - top) + "px";
  }

  // --- colouring -----------------------------------------------------------------------------------------------
  let cur = { kind: D.neuron.kind, layer: D.neuron.layer, index: D.neuron.index };
  const slot = (n) => (D.kinds.indexOf(n.kind) * L + n.layer) * H + n.index;
  const value = (n, j) => acts[slot(n) * N + j] * scales[slot(n)] / 127;
  const squashed = (n) => D.squash[D.kinds.indexOf(n.kind)];
  // the value a colour stands for, in [-1, 1]: bounded states as they are; unbounded ones (an LSTM's c)
  // divided by their largest magnitude on this text, or by tanh, as the cell passes them on (h = o * tanh(c))
  function shader(n) {
    if (!squashed(n)) return (v) => Math.max(-1, Math.min(1, v));
    if ($("scale").value === "max") { const m = scales[slot(n)]; return (v) => v / m; }
    return Math.tanh;
  }
  const scaleNote = (n) => !squashed(n) ? "" : $("scale").value === "max" ?
    `, coloured by value / ${scales[slot(n)].toFixed(2)} (its largest magnitude here)` : ", coloured by tanh(value)";
  function colour(v) {
    const end = v < 0 ? NEG : POS, a = Math.abs(v);
    return `rgb(${end.map((e) => Math.round(255 + (e - 255) * a)).join(",")})`;
  }
  function paint() {
    const base = slot(cur) * N, s = scales[slot(cur)] / 127, shade = shader(cur);
    let lo = Infinity, hi = -Infinity;
    for (let j = 0; j < N; j++) {
      const v = acts[base + j] * s;
      lo = Math.min(lo, v); hi = Math.max(hi, v);
      cells[j].style.backgroundColor = colour(shade(v));
    }
    $("status").textContent = `${cur.kind === "c" ? "cell state c" : "hidden state h"} of layer ${cur.layer}, ` +
      `neuron ${cur.index}${scaleNote(cur)}` + (N ? ` · from ${lo.toFixed(2)} to ${hi.toFixed(2)} on this text` : "");
    $("scale-label").style.display = squashed(cur) ? "" : "none";
    fitAside();
    document.querySelectorAll("#ranked li").forEach((li) => li.classList.toggle("sel", li.dataset.n === key(cur)));
  }
  const key = (n) => `${n.layer}:${n.index}${n.kind === "c" ? ":c" : ""}`;
  function select(n, updateHash = true) {
    if (!(n.layer >= 0 && n.layer < L && n.index >= 0 && n.index < H && D.kinds.includes(n.kind))) return;
    cur = n;
    $("layer").value = n.layer; $("kind").value = n.kind; $("index").value = n.index;
    paint();
    if (updateHash) toHash();
  }
  // the URL names the neuron and the view: #neuron=1:37:c, and &view=predictions for predictions under the text
  function toHash() {
    const view = $("preds").checked ? "&view=predictions" : "";
    try { history.replaceState(null, "", "#neuron=" + key(cur) + view); } catch (e) { /* file: URLs may refuse */ }
  }
  function showPredictions(on) {
    $("preds").checked = on;
    textEl.classList.toggle("compact", !on);
    fitAside();
  }
  function fromHash() {
    const m = /neuron=(\d+):(\d+)(?::([hc]))?/.exec(location.hash);
    if (m) select({ layer: +m[1], index: +m[2], kind: m[3] || "h" }, false);
    showPredictions(/view=predictions/.test(location.hash));
  }

  // --- controls ------------------------------------------------------------------------------------------------
  for (let l = 0; l < L; l++) $("layer").add(new Option(String(l), String(l)));
  for (const k of D.kinds) $("kind").add(new Option(k === "c" ? "c (cell)" : "h (hidden)", k));
  if (K < 2) $("kind-label").style.display = "none";
  $("index").max = H - 1;
  const fromControls = () => select({ layer: +$("layer").value, kind: $("kind").value,
                                      index: Math.max(0, Math.min(H - 1, Math.floor(+$("index").value || 0))) });
  for (const id of ["layer", "kind", "index"]) $(id).addEventListener("change", fromControls);
  $("scale").addEventListener("change", paint);
  $("prev").onclick = () => select({ ...cur, index: (cur.index + H - 1) % H });
  $("next").onclick = () => select({ ...cur, index: (cur.index + 1) % H });
  $("preds").addEventListener("change", () => { showPredictions($("preds").checked); toHash(); });
  $("legend").style.background = `linear-gradient(to right, ${colour(-1)}, #fff, ${colour(1)})`;

  let feature = "", items = "";
  for (const m of D.matches) {
    if (m.feature !== feature) { feature = m.feature; items += `<li class="f">${esc(feature)}</li>`; }
    const n = key(m);
    items += `<li data-n="${n}">layer ${m.layer} · ${m.kind} ${m.index}<span class="r">r = ${m.r >= 0 ? "+" : "−"}${Math.abs(m.r).toFixed(2)}</span></li>`;
  }
  $("ranked").innerHTML = items || "<li class=\"f\">no property of this text varies enough to rank neurons</li>";
  $("ranked").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-n]");
    if (!li) return;
    const [layer, index, kind] = li.dataset.n.split(":");
    select({ layer: +layer, index: +index, kind: kind || "h" });
  });

  // --- hover: the numbers behind a character -----------------------------------------------------------------
  const tip = $("tip");
  let on = null;
  textEl.addEventListener("mouseover", (e) => {
    const col = e.target.closest(".k");
    if (!col) return;
    if (on) on.classList.remove("on");
    on = col; col.classList.add("on");
    const j = +col.dataset.i, v = value(cur, j);
    const after = j + 1 < N ? (chars[j + 1] === "\n" ? "↵" : chars[j + 1]) : null;
    let rows = "";
    for (let t = 0; t < T; t++) {
      const c = D.vocab[topIds[j * T + t]];
      rows += `<tr class="${hit[j] === t ? "hit" : ""}"><td>${esc(c)}</td><td>${(topP[j * T + t] / 2.55).toFixed(1)}%</td></tr>`;
    }
    const ch = chars[j] === "\n" ? "↵" : chars[j] === " " ? "␣" : chars[j];
    tip.innerHTML = `character ${j}: <b>${esc(ch)}</b><br>${key(cur)} = <b>${v.toFixed(3)}</b>` +
      (squashed(cur) ? ` (coloured as ${shader(cur)(v).toFixed(3)})` : "") +
      `<br>next, most likely first:<table>${rows}</table>` +
      (after === null ? "" : `came next: <b>${esc(after === " " ? "␣" : after)}</b> with p = ${nextP[j].toPrecision(3)}`);
    tip.style.display = "block";
  });
  textEl.addEventListener("mousemove", (e) => {
    const x = Math.min(e.clientX + 14, innerWidth - tip.offsetWidth - 4), y = e.clientY + 16;
    tip.style.left = x + "px";
    tip.style.top = (y + tip.offsetHeight > innerHeight ? e.clientY - tip.offsetHeight - 8 : y) + "px";
  });
  textEl.addEventListener("mouseleave", () => { tip.style.display = "none"; if (on) on.classList.remove("on"); on = null; });

  window.addEventListener("hashchange", fromHash);
  select(cur, false);
  fromHash();
  window.addEventListener("resize", fitAside);
  document.body.dataset.ready = "1";
})();
</script>
</body>
</html>
"""
