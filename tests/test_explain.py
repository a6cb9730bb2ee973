"""`llmzip explain`: a self-contained page, one element per token, rendered in Chromium."""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CORPUS

from llmzip.cli.commands import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
SCREENSHOT_DIR = Path(os.environ.get("LLMZIP_ARTIFACTS", "build/test-artifacts"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def page(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "alice.html"
    result = run("explain", CORPUS / "alice29.txt", "-m", tiny_llama, "--max-bytes", 2500,
                 "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


def _chromium(*args, profile):
    if CHROMIUM is None:
        if os.environ.get("LLMZIP_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium is required here (LLMZIP_REQUIRE_CHROMIUM=1) but not installed")
        pytest.skip("chromium is not installed (make test installs it where apt-get can)")
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout.decode()


def test_page_is_self_contained(page):
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text


def test_page_renders_one_element_per_token_with_totals_matching_bench(page, tiny_llama,
                                                                      tmp_path):
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    rows = json.loads(run("bench", CORPUS / "alice29.txt", "-m", tiny_llama, "--max-bytes", 2500,
                          "--format", "json").stdout)
    ours = rows[-1]

    def total(key):
        return re.search(rf'<td id="{key}">([^<]*)</td>', dom).group(1)

    n_tokens = int(total("tokens").replace(",", ""))
    assert len(re.findall('<span class="t[ "]', dom)) == n_tokens > 400
    assert int(total("archive-bytes").split()[0].replace(",", "")) == ours["compressed_bytes"]
    assert float(total("xent-bpb")) == pytest.approx(ours["cross_entropy_bpb"], abs=5e-5)
    assert float(total("archive-bpb")) == pytest.approx(ours["bpb"], abs=5e-5)
    spans = re.findall(r'<span class="t" [^>]*>([^<]*)</span>', dom)  # visible text (no CR)
    shown = "".join(html.unescape(s) for s in spans)
    assert shown == (CORPUS / "alice29.txt").read_bytes()[:2500].decode().replace("\r", "")


def test_screenshot(page, tmp_path):
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = (SCREENSHOT_DIR / "explain.png").resolve()
    shot.unlink(missing_ok=True)
    _chromium(f"--screenshot={shot}", "--window-size=1100,900", page.as_uri(),
              profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000


def test_existing_page_is_kept_without_force(page):
    before = page.read_bytes()
    result = run("explain", CORPUS / "alice29.txt", "-o", page)
    assert result.exit_code == 1 and result.stderr == f"llmzip: {page} already exists; use -f to overwrite\n"
    assert page.read_bytes() == before


def test_a_copy_is_one_labelled_element_where_it_sits_among_the_tokens(tiny_llama):
    """Tokens are shown in file order with the copied bytes as one element at their place."""
    from llmzip import Codec
    from llmzip.tools.explain import explain
    text = (CORPUS / "alice29.txt").read_bytes()
    data = text[:17_000] + text[300:900] + b"#" + text[17_000:17_500]  # 600 B, 16.7 KB back
    page, stats = explain(Codec(tiny_llama, segment_tokens=512), data, "repeat")
    assert [(c.dest, c.source, c.size) for c in stats.copies] == [(17_000, 300, 600)]
    body = page.split('<pre id="text">')[1].split("</pre>")[0]
    label = "[600 bytes copied from byte 300]"
    assert body.count(label) == 1
    before, after = body.split(label)

    def shown(part):
        return "".join(html.unescape(s) for s in re.findall(
            r'<span class="t[^"]*" [^>]*>([^<]*)</span>', part)).replace("\u00b7", "")

    assert shown(before) == text[:17_000].decode().replace("\r", "")
    assert shown(after) == "#" + text[17_000:17_500].decode().replace("\r", "")


def test_a_tar_shows_its_text_stream_then_its_binary_stream(tiny_llama):
    """With a layout the page shows what the model read: the text stream (each member's
    name on a line, then a text member's contents), then the binary stream as one element."""
    from test_mixed import SOURCES, make_tar

    from llmzip import Codec
    from llmzip.codec import mixed
    from llmzip.tools.explain import explain
    tar = make_tar(SOURCES)
    page, stats = explain(Codec(tiny_llama, segment_tokens=128), tar, "src.tar")
    body = page.split('<pre id="text">')[1].split("</pre>")[0]
    binary = len(mixed.plan(tar).binary)
    assert stats.blocks["binary"] == binary
    assert body.endswith(f"[{binary:,} bytes between the text runs, coded without the model]"
                         "</span>")
    assert "src/alice.txt\n" in html.unescape(re.sub(r"<[^>]+>", "", body))
