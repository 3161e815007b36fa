"""`rnnlm viz` and `rnnlm plot`: the text features, the neuron ranking, the trace against a whole-text forward,
the page's self-containment, the page as a real browser renders it, and the training curves."""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import REPO, assert_user_error, cli, run_cli
from rnnlm import checkpoint as ckpt
from rnnlm.config import load_config
from rnnlm.errors import RnnlmError
from rnnlm.model import CharRNN
from rnnlm.viz import (BRACKETS, COMMENT, FEATURES, INDENT, LINE_POSITION, QUOTES, URL, Neuron, page_for_checkpoint,
                       quantise, rank_neurons, text_features, trace)
from rnnlm.vocab import EOS_ID, Vocab

C_TEXT = """/* Copy a string; see https://example.org/strcpy. */
static int copy(char *dst, const char *src)
{
\tint n = 0; // how many
\twhile ((dst[n] = src[n]) != '\\0') {
\t\tn++;
\t\tif (n > 10) printf("long: %d (\\"%s\\")\\n", n, src);
\t}
\treturn n;
}
"""


def make_model(text: str, cell: str = "lstm", layers: int = 2, hidden: int = 12,
               seed: int = 0) -> tuple[CharRNN, Vocab]:
    torch.manual_seed(seed)
    cfg = load_config(None, [f"model.cell={cell}", f"model.num_layers={layers}", f"model.hidden_size={hidden}"])
    vocab = Vocab.from_texts([text])
    return CharRNN(len(vocab), cfg.model).eval(), vocab


def save_checkpoint(path: Path, model: CharRNN, vocab: Vocab) -> Path:
    cfg = load_config(None, [f"model.cell={model.cfg.cell}", f"model.num_layers={model.cfg.num_layers}",
                             f"model.hidden_size={model.cfg.hidden_size}"])
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save([path], ckpt.Checkpoint(cfg, vocab, False, model.state_dict(), 7, None))
    return path


# ---------------------------------------------------------------------------------------------------
# Features of the text


def marks(values: np.ndarray) -> str:
    return "".join(str(int(v)) if v < 10 else "+" for v in values)


def test_features_of_crafted_text():
    text = 'a "b(c)\\"" d /* "e" */ f // g(\n  h(i[j]) http://x.org/p. k\n\tq'
    f = text_features(text)
    assert set(f) == set(FEATURES) and all(len(v) == len(text) for v in f.values())
    # text:             a "b(c)\"" d /* "e" */ f // g(~  h(i[j]) http://x.org/p. k~>q
    assert marks(f[LINE_POSITION]) == "123456789+++++++++++++++++++++0123456789++++++++++++++++++012"
    assert marks(f[QUOTES]) == "0011111110000000000000000000000000000000000000000000000000000"  # \" does not close
    assert marks(f[BRACKETS]) == "0000110000000000000000000000000000112210000000000000000000000"  # not in comments
    assert marks(f[INDENT]) == "0000000000000000000000000000000122222222222222222222222222088"   # a tab reaches 8
    assert marks(f[COMMENT]) == "0000000000000011111110000011110000000000000000000000000000000"  # `://` is no comment
    assert marks(f[URL]) == "0000000000000000000000000000000000000000011111111111111000000"      # without the final .


def test_features_of_c_source_see_its_comments_strings_and_blocks():
    f = text_features(C_TEXT)
    at = lambda feature, needle, k=0: f[feature][C_TEXT.index(needle) + k]  # noqa: E731
    assert at(COMMENT, "Copy") == 1 and at(COMMENT, "static") == 0 and at(COMMENT, "how many") == 1
    assert at(URL, "example.org") == 1 and at(URL, "strcpy.") == 1 and at(URL, ". */") == 0
    assert at(QUOTES, "long") == 1 and at(QUOTES, "%s") == 1 and at(QUOTES, ", n, src") == 0
    assert at(BRACKETS, "n++") == 2 and at(BRACKETS, "printf") == 2 and at(BRACKETS, "%d") == 3
    assert at(BRACKETS, "return") == 1
    assert at(INDENT, "n++") == 16 and at(LINE_POSITION, "static", 3) == 4


def test_a_closed_comment_and_a_quote_character_open_nothing():
    """`*//` closes a comment and opens none (its `/` closed it); C's character literal '"' opens no string."""
    text = "/* a *//b;\nc = '\"'; d = \"e\";\nif (c == '\\\"') x = 1;\n"
    f = text_features(text)
    assert f[COMMENT][text.index("b;")] == 0 and f[COMMENT][text.index(" a")] == 1
    assert f[QUOTES][text.index("; d")] == 0 and f[QUOTES][text.index("e")] == 1
    assert f[QUOTES][text.index(") x")] == 0


# ---------------------------------------------------------------------------------------------------
# Ranking neurons


def test_ranking_finds_planted_neurons_and_skips_constant_features():
    rng = np.random.default_rng(0)
    n = 400
    text = "".join(rng.choice(list("ab (c)\n"), n))
    feats = text_features(text)
    states = {"h": rng.normal(size=(2, n, 8)).astype(np.float32), "c": rng.normal(size=(2, n, 8)).astype(np.float32)}
    states["c"][1, :, 5] = -3 * feats[LINE_POSITION] + rng.normal(scale=0.5, size=n)   # negative: |r| counts
    states["h"][0, :, 2] = 0.2 * feats[BRACKETS] + rng.normal(scale=0.1, size=n)
    matches = rank_neurons(states, feats, per_feature=2)
    best = {m.feature: m for m in reversed(matches)}
    assert best[LINE_POSITION].neuron == Neuron(1, 5, "c") and best[LINE_POSITION].correlation < -0.9
    assert best[BRACKETS].neuron == Neuron(0, 2, "h") and best[BRACKETS].correlation > 0.9
    assert COMMENT not in best and URL not in best and QUOTES not in best  # never vary in this text
    assert [m.feature for m in matches].count(LINE_POSITION) == 2
    firsts = [m for i, m in enumerate(matches) if i == 0 or matches[i - 1].feature != m.feature]
    assert [abs(m.correlation) for m in firsts] == sorted((abs(m.correlation) for m in firsts), reverse=True)


def test_a_bracket_neuron_planted_in_a_real_model_is_found(tmp_path):
    """A tanh RNN whose neuron 3 switches to +1 at '(' and to -1 at ')' and holds its value in between."""
    text = "".join(f"f{i}(x, {i}) + g(y) * {i % 7}\nz = (a + b{i});\n" for i in range(40))
    model, vocab = make_model(text, cell="rnn", layers=1, hidden=6)
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(0.3)
        w_ih, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
        w_ih[3], w_hh[3], model.rnn.bias_ih_l0[3], model.rnn.bias_hh_l0[3] = 0, 0, 0, 0
        w_ih[3, vocab.itos.index("(")], w_ih[3, vocab.itos.index(")")], w_hh[3, 3] = 6, -6, 3
    page = page_for_checkpoint(ckpt.load(save_checkpoint(tmp_path / "rnn.pt", model, vocab)), text, chars=None)
    bracket = [m for m in page.matches if m.feature == BRACKETS]
    assert bracket[0].neuron == Neuron(0, 3, "h") and bracket[0].correlation > 0.9


# ---------------------------------------------------------------------------------------------------
# Reading the text


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_trace_agrees_with_reading_the_whole_text_at_once(cell):
    text = "To be, or not to be: that is the question.\nWhether 'tis nobler"
    model, vocab = make_model(text, cell=cell)
    tr = trace(model, vocab, text)
    ids = torch.cat([vocab.encode("\n"), vocab.encode(text)])[None]  # read after a newline, as eval reads a file
    with torch.no_grad():
        logits, _ = model(ids)
    probs = logits[0].softmax(-1)  # (1 + N, V): row 0 predicts the text's first character
    torch.testing.assert_close(torch.from_numpy(tr.top_probs), probs[1:].topk(5, -1).values)
    torch.testing.assert_close(torch.from_numpy(tr.next_prob[:-1]), probs[1:-1].gather(1, ids[0, 2:, None])[:, 0])
    assert tr.first_prob == pytest.approx(float(probs[0, ids[0, 1]]))
    assert math.isnan(tr.next_prob[-1]) and tr.next_ids[-1] == -1
    for t in (0, 17, len(text) - 1):  # every layer's state after character t = the final state of reading up to it
        with torch.no_grad():
            _, state = model(ids[:, :t + 2])
        for kind, s in zip(("h", "c"), state if isinstance(state, tuple) else (state,)):
            torch.testing.assert_close(torch.from_numpy(tr.states[kind][:, t]), s[:, 0])
    assert set(tr.states) == ({"h", "c"} if cell == "lstm" else {"h"})
    assert tr.states["h"].shape == (2, len(text), 12)


def test_records_are_read_from_eos_and_padded_ones_each_from_zero():
    model, vocab = make_model("aabb", cell="gru", layers=1, hidden=8)
    padded = trace(model, vocab, "ab\naabb", records=True, reset_at_eos=True)
    alone = trace(model, vocab, "aabb", records=True, reset_at_eos=True)
    np.testing.assert_allclose(padded.states["h"][:, 3:], alone.states["h"], rtol=0, atol=1e-6)
    assert padded.next_ids[1] == EOS_ID  # after "ab" came the end of the record
    packed = trace(model, vocab, "ab\naabb", records=True)
    assert not np.allclose(packed.states["h"][:, 3:], alone.states["h"])  # packed records carry the state over


# ---------------------------------------------------------------------------------------------------
# The page


def page_data(page_html: str) -> dict[str, Any]:
    raw = re.search(r'<script type="application/json" id="data">(.*?)</script>', page_html, re.S).group(1)
    return json.loads(raw)


def test_page_is_self_contained_and_carries_the_text_safely(tmp_path):
    text = 'if (a < b && c > d) { s = "</script><script>alert(1)</script>"; } \u2028 é 😀\n'
    model, vocab = make_model(text)
    page = page_for_checkpoint(ckpt.load(save_checkpoint(tmp_path / "m.pt", model, vocab)), text,
                               title="__DATA__ </title>")
    html = page.html
    assert "<title>__DATA__ &lt;/title&gt; · rnnlm viz</title>" in html  # the title is text, not a placeholder
    for outside in ("http://", "https://", "<link", "src=", "url(", "@import", "//fonts"):
        assert outside not in html.lower(), outside
    assert html.count("</script>") == 2  # the data block and the one inline script; the text's own are escaped
    data = page_data(html)
    assert data["text"] == text
    q, scale = quantise(page.trace.states)
    assert base64.b64decode(data["acts"]) == q.tobytes() and q.shape == (2, 2, 12, len(text))
    exact = np.stack([s.transpose(0, 2, 1) for s in page.trace.states.values()])  # (K, L, H, N)
    np.testing.assert_allclose(q * scale[..., None] / 127, exact, atol=float(scale.max()) / 250)


def test_a_carriage_return_is_shown_as_backslash_r(tmp_path):
    """Windows line ends: the page drew \\r as ␍, an empty box in a browser without that symbol's font, and its
    predictions as '·', the mark of an unprintable character."""
    text = "one\r\ntwo\r\n"
    model, vocab = make_model(text)
    page = page_for_checkpoint(ckpt.load(save_checkpoint(tmp_path / "m.pt", model, vocab)), text)
    assert "\\r" in page_data(page.html)["vocab"] and "␍" not in page.html


def test_neuron_choice_is_checked(tmp_path):
    model, vocab = make_model("abc", cell="gru", layers=2, hidden=4)
    point = ckpt.load(save_checkpoint(tmp_path / "m.pt", model, vocab))
    assert page_for_checkpoint(point, "abcabc", neuron="1:3").neuron == Neuron(1, 3, "h")
    for bad, says in (("2:0", "layers 0..1"), ("0:4", "neurons 0..3"), ("0:1:c", r"\(a GRU has no cell state"),
                      ("x", "LAYER:INDEX")):
        with pytest.raises(RnnlmError, match=says):
            page_for_checkpoint(point, "abc", neuron=bad)
    model, vocab = make_model("abc", cell="rnn", layers=1, hidden=4)
    with pytest.raises(RnnlmError, match=r"\(an RNN has no cell state"):
        page_for_checkpoint(ckpt.load(save_checkpoint(tmp_path / "r.pt", model, vocab)), "abc", neuron="0:1:c")


def test_viz_command_writes_a_page_and_reports_mistakes_in_one_line(tmp_path):
    model, vocab = make_model(C_TEXT)
    point = save_checkpoint(tmp_path / "run" / ckpt.BEST, model, vocab)
    source = tmp_path / "copy.c"
    source.write_text(C_TEXT)
    out = tmp_path / "page.html"
    done = run_cli("viz", str(point.parent), "--file", str(source), "--out", str(out), "--neuron", "1:4:c",
                   "--chars", "100")
    assert done.returncode == 0, done.stderr
    assert "showing neuron 1:4:c" in done.stderr and "the first 100" in done.stderr
    assert page_data(out.read_text())["neuron"] == {"kind": "c", "layer": 1, "index": 4}
    (tmp_path / "long.c").write_bytes(C_TEXT.encode() * 20 + b"\0")  # not text past the page: never read
    done = run_cli("viz", str(point.parent), "--file", str(tmp_path / "long.c"), "--out", str(out), "--chars", "100")
    assert done.returncode == 0 and "100 characters (the first 100" in done.stderr, done.stderr
    piped = subprocess.run([sys.executable, "-m", "rnnlm", "viz", str(point.parent), "--file", "-", "--out", str(out),
                            "--chars", "50"], input=C_TEXT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})  # as eval --file - and --prime-file - read
    assert piped.returncode == 0 and "50 characters (the first 50" in piped.stderr, piped.stderr
    assert page_data(out.read_text())["text"] == C_TEXT[:50]
    bad = run_cli("viz", str(point), "--text", "abc", "--file", str(source))
    assert bad.returncode == 2 and bad.stderr.startswith("error: give the text to read with --file FILE or --text TEXT")
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr



def test_viz_takes_force_as_sample_does_and_names_a_run_read_from_inside_it(tmp_path, monkeypatch):
    """A NaN checkpoint is refused with advice (--force) that viz takes; `rnnlm viz .` in a run folder is titled with
    the folder's name; a --text the terminal did not send as UTF-8 is one line."""
    model, vocab = make_model(C_TEXT)
    run = tmp_path / "bracket-run"
    save_checkpoint(run / ckpt.BEST, model, vocab)
    bad = dict(model.state_dict())
    bad["decoder.bias"] = torch.full_like(bad["decoder.bias"], float("nan"))
    model.load_state_dict(bad)
    broken = save_checkpoint(tmp_path / "nan" / ckpt.BEST, model, vocab)
    assert_user_error(cli("viz", broken, "--text", "int x;", "--out", tmp_path / "n.html"), "NaN", "--force")
    assert cli("viz", broken, "--text", "int x;", "--out", tmp_path / "n.html", "--force")[0] == 0
    bad["rnn.weight_hh_l0"] = torch.full_like(bad["rnn.weight_hh_l0"], float("nan"))  # every state NaN
    model.load_state_dict(bad)
    save_checkpoint(broken, model, vocab)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "invalid value encountered in cast", said twice
        warnings.simplefilter("ignore", UserWarning)  # --force's own warning about the weights
        page = page_for_checkpoint(ckpt.load(broken), "int x; int y;", force=True)
    assert page.matches == []  # no neuron "best tracked" a feature at r = +0.00
    monkeypatch.chdir(run)
    status, _, err = cli("viz", ".", "--text", "{", "--out", tmp_path / "p.html")
    assert status == 0 and "1 character," in err
    assert "<h1>bracket-run</h1>" in (tmp_path / "p.html").read_text()
    assert_user_error(cli("viz", ".", "--text", "a\udcffb", "--out", tmp_path / "q.html"), "--text: not UTF-8")
    assert not (tmp_path / "q.html").exists()

# ---------------------------------------------------------------------------------------------------
# The page in a real browser: headless Chromium driven over its DevTools pipe (no Python dependency)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail("Chromium is missing in CI: .ci/run installs Debian's `chromium`, and the browser tests must run")
    pytest.skip("Chromium is not installed, so the page cannot be checked in a real browser "
                "(apt-get install chromium to run these tests)")


class Browser:
    """Headless Chromium spoken to over --remote-debugging-pipe: JSON messages ended by NUL, on fds 3 and 4."""

    def __init__(self, binary: str, profile: Path):
        # Chromium's ends must become its fds 3 and 4, so none of the four may already be 3 or 4 here
        to_chrome, self._to_chrome, self._from_chrome, from_chrome = (
            _high_fd(fd) for fd in (*os.pipe(), *os.pipe()))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-pipe"]

        def onto_3_and_4() -> None:  # in the child, before exec; dup2 leaves the copies inheritable
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.proc = subprocess.Popen([binary, *flags], preexec_fn=onto_3_and_4, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Network.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": 800, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)

    def send(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                    raise TimeoutError(f"Chromium did not answer {method}")
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (status {self.proc.poll()}) during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": "about:blank"}, session=True)
        self.send("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + 60
        while not self.js("document.readyState === 'complete' && document.body.dataset.ready === '1'"):
            assert time.monotonic() < deadline, "the page never finished drawing"
            time.sleep(0.05)

    def colours(self) -> np.ndarray:
        """The rendered background of every character, (N, 3)."""
        styles = self.js("Array.from(document.querySelectorAll('#text .c'), e => getComputedStyle(e).backgroundColor)")
        return np.array([[int(x) for x in re.findall(r"\d+", s)[:3]] for s in styles])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def c_page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("viz")
    text = C_TEXT * 3
    model, vocab = make_model(text, hidden=12, seed=3)
    with torch.no_grad():
        for weight in model.parameters():
            weight.mul_(4)  # an untrained model's states hover near 0; bigger weights give colours to look at
        plant_two_coloured_neuron(model, vocab)
    page = page_for_checkpoint(ckpt.load(save_checkpoint(folder / "m.pt", model, vocab)), text, neuron="0:1")
    path = folder / "page.html"
    path.write_text(page.html, encoding="utf-8")
    return page, path


def plant_two_coloured_neuron(model: CharRNN, vocab: Vocab) -> None:
    """Layer 0's LSTM unit 0 made to hold about +0.96 after the first half of the vocabulary's characters and -0.96
    after the other half (input and output gates open, the forget gate shut, the cell input tanh(+-4)): a neuron
    the page must draw in both colours, whatever the random weights around it."""
    rnn, h = model.rnn, model.cfg.hidden_size
    i, f, g, o = (k * h for k in range(4))  # the gates' rows, in torch.nn.LSTM's order
    for weights in (rnn.weight_ih_l0, rnn.weight_hh_l0):
        weights[[i, f, g, o]] = 0
    for bias in (rnn.bias_ih_l0, rnn.bias_hh_l0):
        bias[[i, f, g, o]] = torch.tensor([5.0, -5.0, 0.0, 5.0]) / 2
    half = len(vocab) // 2
    rnn.weight_ih_l0[g, :half], rnn.weight_ih_l0[g, half:] = 4.0, -4.0


def expected_colours(page, neuron: Neuron, scaled: bool = True) -> np.ndarray:
    """The colour the page promises: white at 0, towards red (214,67,52) for +1 and blue (49,112,181) for -1,
    with cell states divided by their largest magnitude on the text (`scaled`, the default) or through tanh."""
    q, scale = quantise(page.trace.states)
    k = list(page.trace.states).index(neuron.kind)
    v = q[k, neuron.layer, neuron.index].astype(np.float64) * scale[k, neuron.layer, neuron.index] / 127
    if neuron.kind == "c":
        v = v / scale[k, neuron.layer, neuron.index] if scaled else np.tanh(v)
    v = np.clip(v, -1, 1)
    end = np.where(v[:, None] < 0, [49, 112, 181], [214, 67, 52])
    return 255 + (end - 255) * np.abs(v)[:, None]


def test_browser_draws_one_element_per_character_coloured_by_the_neuron(browser, c_page):
    page, path = c_page
    browser.open(path.as_uri())
    shown = browser.js("Array.from(document.querySelectorAll('#text .c'), e => e.textContent).join('')")
    assert shown == page.trace.text.replace("\n", "↵")  # one element per character, newlines kept (and marked)
    assert browser.js("document.querySelectorAll('#text br').length") == page.trace.text.count("\n")
    assert browser.js("document.querySelectorAll('#text .p').length") == len(page.trace.text)  # predictions
    colours = browser.colours()
    np.testing.assert_allclose(colours, expected_colours(page, Neuron(0, 1)), atol=1.01)
    assert len({tuple(c) for c in colours}) > 20
    assert browser.js("document.getElementById('index').value") == "1"


def test_browser_picker_and_ranked_list_recolour_without_reloading(browser, c_page):
    page, path = c_page
    browser.open(path.as_uri())
    before = browser.colours()
    browser.js("window.marker = 42")  # survives only if the page is not reloaded
    browser.js("""(() => { const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                           e.dispatchEvent(new Event('change')); };
                           set('layer', '1'); set('kind', 'c'); set('index', '7'); })()""")
    after = browser.colours()
    np.testing.assert_allclose(after, expected_colours(page, Neuron(1, 7, "c")), atol=1.01)
    assert (np.abs(after - before).sum(axis=1) > 3).mean() > 0.5
    status = browser.js("document.getElementById('status').textContent")
    assert re.search(r"cell state c of layer 1, neuron 7, coloured by value / \d+\.\d\d \(its largest", status)
    browser.js("(e => { e.value = 'tanh'; e.dispatchEvent(new Event('change')); })(document.getElementById('scale'))")
    np.testing.assert_allclose(browser.colours(), expected_colours(page, Neuron(1, 7, "c"), scaled=False), atol=1.01)
    assert "coloured by tanh(value)" in browser.js("document.getElementById('status').textContent")
    browser.js("(e => { e.value = 'max'; e.dispatchEvent(new Event('change')); })(document.getElementById('scale'))")

    top = page.matches[0]
    browser.js("document.querySelector('#ranked li[data-n]').click()")
    np.testing.assert_allclose(browser.colours(), expected_colours(page, top.neuron), atol=1.01)
    assert browser.js("document.querySelector('#ranked li.sel').dataset.n") == str(top.neuron)
    assert browser.js("['layer', 'kind', 'index'].map(id => document.getElementById(id).value).join(':')") == \
        f"{top.neuron.layer}:{top.neuron.kind}:{top.neuron.index}"
    browser.js("document.getElementById('next').click()")
    assert browser.js("document.getElementById('index').value") == str((top.neuron.index + 1) % 12)
    assert browser.js("window.marker") == 42


def test_browser_hash_picks_the_neuron_and_hovering_shows_the_numbers(browser, c_page):
    page, path = c_page
    browser.open(path.as_uri() + "#neuron=1:5")
    np.testing.assert_allclose(browser.colours(), expected_colours(page, Neuron(1, 5)), atol=1.01)
    j = page.trace.text.index("printf")
    box = browser.js(f"(() => {{ const r = document.querySelectorAll('#text .c')[{j}].getBoundingClientRect();"
                     f" scrollTo(0, r.top - 300); const s = document.querySelectorAll('#text .c')[{j}]"
                     f".getBoundingClientRect(); return [s.left + s.width / 2, s.top + s.height / 2]; }})()")
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0], "y": box[1]}, session=True)
    tip = browser.js("(() => { const t = document.getElementById('tip');"
                     " return [getComputedStyle(t).display, t.innerText]; })()")
    value = page.trace.states["h"][1, j, 5]
    assert tip[0] == "block" and f"character {j}: p" in tip[1]
    shown = re.search(r"1:5 = (-?\d\.\d{3})", tip[1])
    assert shown and abs(float(shown.group(1)) - value) < 0.01
    assert "came next: r with p = " in tip[1]


def test_browser_opens_on_the_text_alone_and_the_address_names_the_view(browser, c_page):
    """Predictions under every character make ten lines fill a screen: they are shown on demand, and the address
    says so, so that a shared link opens as it was seen."""
    page, path = c_page
    shown = "getComputedStyle(document.querySelector('#text .p')).display"
    browser.open(path.as_uri())
    assert browser.js(shown) == "none" and browser.js("document.getElementById('preds').checked") is False
    browser.open(path.as_uri() + "#neuron=1:5&view=predictions")
    assert browser.js(shown) == "block" and browser.js("document.getElementById('preds').checked") is True
    np.testing.assert_allclose(browser.colours(), expected_colours(page, Neuron(1, 5)), atol=1.01)
    browser.js("document.getElementById('preds').click()")
    assert browser.js(shown) == "none" and browser.js("location.hash") == "#neuron=1:5"
    browser.js("document.getElementById('preds').click()")
    assert browser.js("location.hash") == "#neuron=1:5&view=predictions"


def test_browser_screenshot_is_not_blank_and_the_page_fetches_nothing(browser, c_page, tmp_path):
    page, path = c_page
    both_ways = Neuron(0, 0, "h")  # planted: red after half the characters, blue after the rest
    browser.open(path.as_uri() + f"#neuron={both_ways}")
    png = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"])
    (tmp_path / "screenshot.png").write_bytes(png)
    pixels = read_png(png)[..., :3].reshape(-1, 3).astype(int)
    assert len(pixels) == 1200 * 800
    assert len(np.unique(pixels, axis=0)) > 100
    white = (pixels > 245).all(axis=1).mean()
    assert 0.3 < white < 0.97  # a page with text on white, neither empty nor one solid colour
    reddish = (pixels[:, 0] - pixels[:, 2] > 60).mean()
    bluish = (pixels[:, 2] - pixels[:, 0] > 60).mean()
    assert reddish > 0.001 and bluish > 0.001  # the activations are drawn in both colours
    requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert requests == [path.as_uri()]


def read_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium and matplotlib write) -> (H, W, C) uint8."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and interlace == 0 and colour_type in (2, 6), (depth, colour_type, interlace)
    bpp = 3 if colour_type == 2 else 4
    stride, raw = width * bpp, zlib.decompress(idat)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum along the row, per channel
            cur = line.reshape(-1, bpp).cumsum(axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average and Paeth depend on the pixel just decoded: byte by byte
            cur_list, a_line, up = [0] * stride, line.tolist(), prev.tolist()
            for i in range(stride):
                a = cur_list[i - bpp] if i >= bpp else 0
                b, c = up[i], (up[i - bpp] if i >= bpp else 0)
                if kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                cur_list[i] = (a_line[i] + pred) & 255
            cur = np.array(cur_list, np.int64)
        out[y], prev = cur, cur
    return out.reshape(height, width, bpp)


# ---------------------------------------------------------------------------------------------------
# Training curves


def fake_run(folder: Path, scale: float) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for step in range(10, 210, 10):
        lines.append({"step": step, "epoch": 0, "train_loss": scale * 3 / math.sqrt(step), "lr": 0.002,
                      "grad_norm": 1.0, "chars_per_sec": 1000.0, "elapsed": step * 0.1 * scale})
        if step % 50 == 0:
            loss = scale * 3.2 / math.sqrt(step)
            lines.append({"step": step, "val_loss": loss, "bpc": loss / math.log(2), "perplexity": math.exp(loss),
                          "elapsed": step * 0.1 * scale})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 21')  # a cut line
    return folder


def test_plot_never_writes_an_svg_into_a_runs_own_text(tmp_path):
    """An SVG is text: written into a project read as data.path=., it joined the run's corpus and the run's resume
    refused the changed text. A PNG is binary, which a folder's reading leaves out."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'rnnlm[plot]'); CI installs it")
    run = fake_run(tmp_path / "project" / "runs" / "a", 1.0)
    (run / "config.yaml").write_text(f"data:\n  dataset: text\n  path: {tmp_path / 'project'}\n")
    assert_user_error(cli("plot", run, "--out", tmp_path / "project" / "curves.svg"),
                      f"--out {tmp_path / 'project' / 'curves.svg'} would become part of the text the run trained on")
    assert not (tmp_path / "project" / "curves.svg").exists()
    for out in (tmp_path / "project" / "curves.png", tmp_path / "curves.svg"):
        assert cli("plot", run, "--out", out)[0] == 0 and out.exists()
    (tmp_path / "project" / "kept.svg").write_text("<svg/>")  # one of the text's files already: kept as it is
    assert_user_error(cli("plot", run, "--out", tmp_path / "project" / "kept.svg"), "kept.svg is part of the text")
    assert (tmp_path / "project" / "kept.svg").read_text() == "<svg/>"


def test_plot_of_runs_leaves_out_a_start_that_never_logged_with_a_warning(tmp_path):
    """`rnnlm plot ck/*` failed outright on one folder a start killed while it prepared its corpus had left (its
    lock file alone); given alone, such a folder is still an error."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'rnnlm[plot]'); CI installs it")
    run = fake_run(tmp_path / "ck" / "a", 1.0)
    (tmp_path / "ck" / "killed").mkdir()
    (tmp_path / "ck" / "killed" / ".lock").touch()
    status, _, err = cli("plot", run, tmp_path / "ck" / "killed", "--out", tmp_path / "c.png")
    assert status == 0 and (tmp_path / "c.png").exists(), err
    assert f"warning: left out {tmp_path / 'ck' / 'killed'}: a start that never began training" in err
    assert_user_error(cli("plot", tmp_path / "ck" / "killed", "--out", tmp_path / "d.png"),
                      "a start that never began training")


def test_plot_draws_two_runs_on_one_figure(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'rnnlm[plot]'); CI installs it")
    a, b = fake_run(tmp_path / "runs" / "lstm", 1.0), fake_run(tmp_path / "runs" / "gru", 1.3)
    (tmp_path / "runs" / "notes").mkdir()  # not a run
    # the runs named, or their folder (as `rnnlm runs` takes it: it was "no metrics.jsonl here")
    for given in ([a, b], [tmp_path / "runs"]):
        out = tmp_path / "curves.png"
        done = run_cli("plot", *map(str, given), "--out", str(out))
        assert done.returncode == 0, done.stderr
        pixels = read_png(out.read_bytes())[..., :3].reshape(-1, 3).astype(int)
        assert len(np.unique(pixels, axis=0)) > 50 and (pixels < 200).any(axis=1).mean() > 0.01
        for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours: one per run
            assert (np.abs(pixels - colour).sum(axis=1) < 30).sum() > 200, colour
        out.unlink()


def test_plot_of_many_runs_keeps_its_legend_off_the_curves_and_each_run_its_own_colour(tmp_path):
    """A sweep of 22 runs: the legend (one entry per run) sat inside the right panel, over the curves and past its
    edge, and matplotlib's ten colours came round again, so run 0 and run 10 looked alike."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'rnnlm[plot]'); CI installs it")
    from matplotlib.colors import to_hex

    from rnnlm.plot import Axes, _pyplot, draw, read_curves

    plt = _pyplot()
    runs = [read_curves(fake_run(tmp_path / f"sweep-{i:02d}", 1 + 0.05 * i)) for i in range(22)]
    fig = draw(plt, runs, Axes())
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        names = [t.get_text() for t in legend.get_texts()]
        assert sorted(n for n in names if n.startswith("sweep-")) == [r.name for r in runs]
        box, figure = legend.get_window_extent(renderer), fig.bbox
        assert figure.x0 <= box.x0 and box.x1 <= figure.x1 and figure.y0 <= box.y0
        for ax in fig.axes:
            assert not box.overlaps(ax.get_tightbbox(renderer)), "the legend covers a panel"
        drawn = {to_hex(line.get_color()) for line in fig.axes[0].get_lines()}
        assert len(drawn) == len(runs)
    finally:
        plt.close(fig)


def test_plot_draws_a_run_of_one_training_record(tmp_path):
    """A short run (or log_every past its steps) logs one record: a line through one point draws nothing."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'rnnlm[plot]'); CI installs it")
    from rnnlm.plot import plot_runs

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(json.dumps({"step": 10, "epoch": 0, "train_loss": 2.0, "lr": 0.01,
                                                                "elapsed": 1.0, "train_time": 1.0}) + "\n")
    pixels = read_png(plot_runs([tmp_path / "run"], tmp_path / "c.png").read_bytes())[..., :3].reshape(-1, 3)
    assert (np.abs(pixels.astype(int) - (31, 119, 180)).sum(axis=1) < 30).sum() > 30  # the run's colour, drawn


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    from rnnlm.plot import plot_runs
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(RnnlmError, match=r"pip install 'rnnlm\[plot\]'"):
        plot_runs([fake_run(tmp_path / "run", 1.0)], tmp_path / "curves.png")


def test_plot_of_a_folder_without_metrics_is_one_line(tmp_path):
    done = run_cli("plot", str(tmp_path), "--out", str(tmp_path / "c.png"))
    assert done.returncode == 2 and "no metrics.jsonl" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert_user_error(cli("plot", save_checkpoint(tmp_path / "run" / ckpt.BEST, *make_model("ab")), "--out",
                          tmp_path / "c.png"), "not a run's metrics.jsonl")
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "config.yaml").write_text("model: {cell: gru}\n")  # stopped before its first record
    (tmp_path / "killed" / ".lock").write_text("12345\n")
    assert_user_error(cli("plot", tmp_path / "killed", "--out", tmp_path / "c.png"), "no metrics.jsonl yet",
                      f"rnnlm train --resume {tmp_path / 'killed'}")
    assert_user_error(cli("plot", tmp_path / "nope", "--out", tmp_path / "c.png"), f"{tmp_path / 'nope'}: no such "
                      "folder; give a run directory made by `rnnlm train`")
    (tmp_path / "project").mkdir()  # configs, not a run: resuming it is no answer
    (tmp_path / "project" / "config.yaml").write_text("model: {cell: gru}\n")
    assert_user_error(cli("plot", tmp_path / "project", "--out", tmp_path / "c.png"),
                      f"{tmp_path / 'project'}: no metrics.jsonl here; give a run directory made by `rnnlm train`")
    odd = tmp_path / "odd.jsonl"
    odd.write_text('[1, 2]\n"text"\n')  # JSON, but not records
    assert_user_error(cli("plot", odd, "--out", tmp_path / "c.png"), "no loss records yet")
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("dataset, records_mode, text", [("anbn", "pad", "ab\naabb\nab\n"),
                                                         ("anbn", "pack", "ab\naabb\nab\n"),
                                                         ("anbn", "pack", "ab\naabb\nab"),  # its last <eos> too
                                                         ("hello", "pack", "hello hole\nhell\n")])  # a stream
def test_the_pages_bits_per_character_are_evals_on_the_same_text(tmp_path, dataset, records_mode, text):
    """The page left out the first character's prediction (after <eos> or the newline before the text), so its
    figure disagreed with `rnnlm eval --file` on the same text (3.642 where 3.678)."""
    from rnnlm.evaluate import evaluate_sources
    from rnnlm.texts import file_source

    from helpers import make_checkpoint

    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset=dataset, chars="ab" if dataset == "anbn" else "helo ",
                                      records_mode=records_mode))
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    scored = evaluate_sources(point, [file_source(tmp_path / "t.txt", point)]).total.bpc
    assert page_for_checkpoint(point, text).trace.bits_per_char == pytest.approx(scored, rel=1e-5)


def test_a_records_models_page_reads_a_crlf_file_as_training_does(tmp_path):
    """A names list saved on Windows: every name ended in a CR read as <unk> before its <eos>, and the warning
    showed the characters run together ('\\t"</>(1)\\r...')."""
    from helpers import make_checkpoint

    point = ckpt.load(make_checkpoint(tmp_path / "m.pt", dataset="anbn", chars="ab", records_mode="pad"))
    assert page_for_checkpoint(point, "ab\r\naabb\r\n").trace.unknown == []
    (tmp_path / "t.txt").write_text("ab\r\na\tb\r\n", encoding="utf-8", newline="")
    status, _, err = cli("viz", tmp_path / "m.pt", "--file", tmp_path / "t.txt", "--out", tmp_path / "p.html")
    assert status == 0 and "warning: characters the model never saw, read as <unk>: '\\t'\n" in err, err


def test_a_page_stopped_while_it_is_made_says_what_became_of_its_out_file(tmp_path, monkeypatch):
    """The page is made before it is written: a Ctrl-C then ended viz without a word of its --out file."""
    import rnnlm.viz

    from helpers import make_checkpoint

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(rnnlm.viz, "page_for_checkpoint", interrupted)
    model = make_checkpoint(tmp_path / "m.pt", dataset="hello", chars="helo")
    status, _, err = cli("viz", model, "--text", "hello", "--out", tmp_path / "p.html")
    assert status == 130 and err.splitlines()[-1] == f"stopped: --out {tmp_path / 'p.html'} was not written", err
    assert not (tmp_path / "p.html").exists()
