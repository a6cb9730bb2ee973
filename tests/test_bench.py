"""`llmzip bench`: real round trips against the classical codecs, in md, csv and json."""

import csv
import io
import json

import pytest
from click.testing import CliRunner
from conftest import CORPUS, corpus_file

from llmzip.cli.commands import main
from llmzip.tools import bench

CLASSICAL = ["gzip -9", "bzip2 -9", "xz -9e", "zstd -19 --long", "brotli -q 11"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def json_rows(tiny_llama):
    result = run("bench", CORPUS / "alice29.txt", "-m", tiny_llama, "--max-bytes", 6000,
                 "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_has_a_row_per_classical_codec_and_model(json_rows, tiny_llama):
    assert [r["compressor"].split(" (")[0] for r in json_rows] == CLASSICAL + [f"llmzip {tiny_llama}"]
    assert all(list(r) == bench.COLUMNS for r in json_rows)
    assert all(r["roundtrip_ok"] is True and r["bytes"] == 6000 for r in json_rows)


def test_sizes_are_real_and_bits_per_byte_follow_from_them(json_rows, tiny_llama, codecs):
    import gzip
    gz = json_rows[0]
    assert gz["compressed_bytes"] == len(gzip.compress(corpus_file("alice29.txt")[:6000], 9, mtime=0))
    ours = json_rows[-1]
    blob = codecs(tiny_llama).compress(corpus_file("alice29.txt")[:6000])
    assert ours["compressed_bytes"] == len(blob)
    for r in json_rows:
        assert r["bpb"] == pytest.approx(8 * r["compressed_bytes"] / 6000)


def test_llmzip_row_shows_cross_entropy_overhead_and_the_model_size(json_rows):
    ours = json_rows[-1]
    assert 0 <= ours["overhead_pct"] < 0.5
    assert ours["cross_entropy_bpb"] < ours["bpb"]
    assert ours["model_bytes"] > 0
    assert ours["two_part_bpb"] == pytest.approx(8 * (ours["compressed_bytes"] + ours["model_bytes"]) / 6000)
    assert all(r["cross_entropy_bpb"] is None and r["model_bytes"] is None for r in json_rows[:5])
    assert all(r["peak_rss_mb"] > 10 and r["compress_s"] > 0 for r in json_rows)


def test_markdown_and_csv_formats(tiny_llama, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_bytes(corpus_file("argparse.py")[:3000])
    md = run("bench", src, "-m", tiny_llama, "--plot", tmp_path / "chart.png")
    assert md.exit_code == 0, md.stderr
    lines = md.stdout.strip().splitlines()
    assert lines[0].startswith("| file | bytes | compressor | compressed (bytes) | bits/byte | "
                               "model cross-entropy (bits/byte) | coder overhead (%) |")
    assert len(lines) == 2 + 6 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = run("bench", src, "-m", tiny_llama, "--format", "csv").stdout
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == bench.COLUMNS and len(table) == 6


def test_missing_file_is_a_one_line_error(tmp_path):
    result = run("bench", tmp_path / "nope.txt")
    assert result.exit_code == 1
    assert result.stderr == f"llmzip: {tmp_path / 'nope.txt'}: no such file\n"


def test_without_the_bench_extra_the_table_leaves_brotli_out_and_says_so(tmp_path, monkeypatch,
                                                                         tiny_llama):
    monkeypatch.setitem(__import__("sys").modules, "brotli", None)  # as if not installed
    src = tmp_path / "notes.txt"
    src.write_bytes(b"some text, and then some more text\n" * 20)
    result = run("bench", src, "-m", tiny_llama, "--format", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0] == ("llmzip: note: brotli not installed: its column is "
                                             "left out (pip install 'llmzip[bench]')")
    names = [row["compressor"].split(" (")[0] for row in csv.DictReader(io.StringIO(result.stdout))]
    assert names[:4] == CLASSICAL[:4] and names[4].startswith("llmzip") and len(names) == 5


def test_without_zstandard_it_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)  # as if not installed
    src = tmp_path / "notes.txt"
    src.write_bytes(b"some text\n")
    result = run("bench", src)
    assert result.exit_code == 1
    assert result.stderr == ("llmzip: the comparison needs zstandard, a dependency of llmzip that "
                             "is missing here: pip install zstandard\n")
