"""Text inside binary input (format version 6): the text runs cut out, coded as one text
stream, and joined back with the binary stream byte for byte."""

import io
import tarfile

import pytest
from click.testing import CliRunner
from conftest import corpus_file

from llmzip import Codec, CorruptArchiveError
from llmzip.cli.commands import main
from llmzip.codec import mixed
from llmzip.container import (
    Block,
    Header,
    Layout,
    LayoutKind,
    Method,
    describe,
    pack,
    unpack,
)

ALICE = corpus_file("alice29.txt")
ARGPARSE = corpus_file("argparse.py")
ELF = corpus_file("libpython_elf_64k.bin")


def make_tar(members, fmt=tarfile.GNU_FORMAT) -> bytes:
    """A tar of (name, bytes or None for a directory) members, as tarfile writes it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SOURCES = [("src", None), ("src/alice.txt", ALICE[:2500]), ("src/tiny.txt", b"short\n"),
           ("src/lib.bin", ELF[:1500]), ("src/" + "long_name_" * 12 + ".py", ARGPARSE[:3000]),
           ("src/exact.txt", ALICE[5000:5000 + 1024])]  # contents a whole number of blocks
TEXT_FLAGS = (False, True, False, False, True, True)


def test_text_runs_are_the_runs_of_text_bytes_long_enough_for_the_model():
    text, short = b"The quick brown fox jumps over the lazy dog. " * 3, b"name=value"
    utf8 = "Grüße, naïve café. ".encode() * 5
    data = bytes(10) + text + b"\x01\x02" + short + b"\xff" * 5 + utf8
    assert mixed.text_runs(data) == [(10, len(text)), (2 + len(short) + 5, len(utf8))]
    assert mixed.text_runs(b"\xc3" + text) == [(1, len(text))]  # a broken UTF-8 sequence
    assert mixed.text_runs(bytes(range(32)) * 8) == []


@pytest.mark.parametrize("data", [ALICE[:20000], ALICE[:9000] + b"\x00" + ALICE[9000:20000],
                                  ELF], ids=["text", "text with a NUL", "binary"])
def test_text_and_binary_files_get_no_layout(data):
    """Text, even with a stray control byte, is coded as it always was; a binary whose
    strings are all short has no run for the model."""
    assert mixed.plan(data) is None


def tar_headers(tar: bytes):
    """(name, size, type) of each member header, read by hand up to the end blocks."""
    pos, out = 0, []
    while tar[pos:pos + 512].strip(b"\0"):
        header = tar[pos:pos + 512]
        size = int(header[124:136].strip(b"\0 "), 8)
        out.append((header[:100].rstrip(b"\0"), size, header[156:157]))
        pos += 512 + size + -size % 512
    return out


@pytest.mark.parametrize("name", ["alice29.txt", "asyoulik.txt", "argparse.py",
                                  "object_h_64k.h", "libpython_elf_64k.bin"])
def test_no_corpus_file_gets_a_layout(name):
    """So each one's archive is what it was before layouts."""
    assert mixed.plan(corpus_file(name)) is None


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["gnu", "pax", "ustar"])
def test_a_tar_is_cut_by_its_members_and_joined_back_from_its_streams(fmt):
    members = SOURCES if fmt != tarfile.USTAR_FORMAT else \
        [m for m in SOURCES if len(m[0]) <= 100]
    tar = make_tar(members, fmt)
    cut = mixed.plan(tar)
    assert cut.kind == LayoutKind.TAR
    # the text stream: each member's name on a line, then a text member's contents
    contents = {name.encode()[:100]: data for name, data in members if data}
    headers = tar_headers(tar)
    texts = [flag and contents[name] for (name, _, _), flag in zip(headers, cut.members)]
    assert cut.text == b"".join(name + b"\n" + (text or b"")
                                for (name, _, _), text in zip(headers, texts))
    assert [t for t in texts if t] == [d for (_, d), f in zip(SOURCES, TEXT_FLAGS)
                                       if f and (_, d) in members]
    # the binary stream: headers with their names and checksums blank, the other members
    # with their padding
    assert len(cut.binary) == len(tar) - sum(len(t) + -len(t) % 512 for t in texts if t)
    assert cut.binary[:100] == bytes(100) and cut.binary[148:156] == b" " * 8
    assert mixed.tar_join(cut.text, cut.binary, cut.members) == tar
    if fmt == tarfile.GNU_FORMAT:  # the long name is a member of its own, before its file
        assert cut.members == (False, True, False, False, False, True, True)


def test_a_tar_walk_stops_at_a_header_written_another_way():
    """A checksum not in tar's usual form ends the walk: that member and the rest stay in
    the binary stream as they are."""
    tar = bytearray(make_tar(SOURCES))
    fourth = 512 * 4 + 2560  # src/; alice.txt, a header and 5 blocks; tiny.txt, 2: lib.bin
    assert mixed._member_size(tar[fourth:fourth + 512]) == 1500
    tar[fourth + 148:fourth + 156] = b"%07o\0" % int(tar[fourth + 148:fourth + 154], 8)
    cut = mixed.plan(bytes(tar))
    assert cut.members == (False, True, False)
    assert cut.text == b"src/\nsrc/alice.txt\n" + ALICE[:2500] + b"src/tiny.txt\n"
    assert mixed.tar_join(cut.text, cut.binary, cut.members) == tar


def test_runs_of_any_file_split_and_join_back():
    data = (ELF[:700] + ALICE[:3000] + ELF[700:900] + ARGPARSE[:2000] + ELF[900:950]
            + ALICE[3000:3100] + ELF[950:1000])
    cut = mixed.plan(data, tar=False)
    assert cut.kind == LayoutKind.RUNS and len(cut.runs) >= 3
    assert (cut.text, cut.binary) == mixed.split(data, cut.runs)
    assert ALICE[:3000] in cut.text and ARGPARSE[:2000] in cut.text
    assert mixed.join(cut.text, cut.binary, cut.runs) == data


def test_damaged_streams_are_refused_in_one_line():
    cut = mixed.plan(make_tar(SOURCES))
    text, binary = cut.text, cut.binary
    with pytest.raises(CorruptArchiveError, match="do not tile"):
        mixed.join(text + b"!", binary, [(0, len(text))])
    with pytest.raises(CorruptArchiveError, match="do not tile"):
        mixed.tar_join(text + b"!", binary, cut.members)
    with pytest.raises(CorruptArchiveError, match="member header is missing"):
        mixed.tar_join(text, binary[:512 * 2], cut.members)
    damaged = bytearray(binary)
    damaged[512 + 124:512 + 136] = b"77777777777\0"  # the first file's size field
    with pytest.raises(CorruptArchiveError, match="runs past the text stream"):
        mixed.tar_join(text, bytes(damaged), cut.members)
    damaged = bytearray(binary)
    damaged[2048 + 124:2048 + 136] = b"77777777777\0"  # lib.bin's, in the binary stream
    with pytest.raises(CorruptArchiveError, match="runs past the binary stream"):
        mixed.tar_join(text, bytes(damaged), cut.members)


# --- through the codec ------------------------------------------------------------------------

@pytest.mark.parametrize("layout, kind", [("auto", "tar"), ("runs", "runs")])
def test_a_tar_round_trips_with_its_text_coded_by_the_model(tiny_llama, layout, kind):
    tar = make_tar(SOURCES)
    codec = Codec(tiny_llama, layout=layout, segment_tokens=128)
    blob, stats = codec.compress_with_stats(tar)
    facts = describe(blob)
    assert facts["format_version"] == 6 and facts["layout"]["kind"] == kind
    assert facts["model_bytes"] > 0 and stats.blocks["binary"] == facts["layout"]["binary_bytes"]
    assert facts["layout"]["text_bytes"] == sum(b["bytes"] for b in facts["blocks"]) + \
        facts["copied_bytes"]
    assert Codec(tiny_llama).decompress(blob) == tar


def test_without_a_layout_the_tar_is_coded_as_before(tiny_llama):
    tar = make_tar(SOURCES)
    blob = Codec(tiny_llama, layout="none", segment_tokens=128).compress(tar)
    assert describe(blob)["layout"] is None and blob[4] < 6
    assert Codec(tiny_llama).decompress(blob) == tar


def test_when_the_model_codes_none_of_the_text_the_archive_has_no_layout(tiny_llama):
    """Runs of one repeated line: LZMA beats any model on them, so there is nothing to
    cut for, and the file is one classical block and a copy of its first 5,000 bytes, as
    before."""
    data = ELF[:800] + b"0123456789abcdef\n" * 300 + ELF[800:1600] + b"=-" * 2000
    data += data[:5000]
    blob = Codec(tiny_llama).compress(data)
    facts = describe(blob)
    assert facts["layout"] is None and facts["copies"] == 1 and len(facts["blocks"]) == 1
    assert blob == Codec(tiny_llama, layout="none").compress(data)
    assert Codec(tiny_llama).decompress(blob) == data


def test_info_shows_the_cut(tiny_llama, tmp_path):
    path = tmp_path / "src.tar.llmz"
    path.write_bytes(Codec(tiny_llama, segment_tokens=128).compress(make_tar(SOURCES)))
    out = CliRunner().invoke(main, ["info", str(path)]).output
    # the text stream: 7 names on their lines (173 bytes) and 3 members' 6,524 bytes
    assert "layout     tar: 7 members, 3 of them text; text stream 6,697 bytes, binary stream" \
        in out


def test_a_bad_layout_setting_is_refused():
    with pytest.raises(Exception, match="unknown layout 'tar' \\(auto, runs, none\\)"):
        Codec(layout="tar")


# --- the header -------------------------------------------------------------------------------

def _archive(layout: Layout, text: int = 100) -> bytes:
    header = Header(text + layout.binary.raw_size, bytes(8),
                    [Block(Method.STORED, text, payload_size=text)], layout=layout)
    return pack(header, [b"t" * text, b"b" * layout.binary.payload_size], [])


def test_layouts_are_read_back_as_written():
    runs = Layout(LayoutKind.RUNS, Block(Method.STORED, 30, payload_size=30), 100,
                  runs=((0, 40), (10, 60)))
    tar = Layout(LayoutKind.TAR, Block(Method.STORED, 2048, payload_size=2048), 100,
                 members=(True, False, True))
    for layout in (runs, tar):
        header, payloads, _ = unpack(_archive(layout))
        assert header.layout == layout and header.text_size == 100
        assert payloads[-1] == b"b" * layout.binary.payload_size


STORED_30 = Block(Method.STORED, 30, payload_size=30)


@pytest.mark.parametrize("layout, message", [
    (Layout(LayoutKind.RUNS, STORED_30, 100, runs=((0, 40), (0, 60))),
     "an empty text or binary run"),
    (Layout(LayoutKind.RUNS, STORED_30, 100, runs=((0, 40), (31, 60))), "do not tile the file"),
    (Layout(LayoutKind.RUNS, STORED_30, 100, runs=((0, 40),)), "do not tile the file"),
    (Layout(LayoutKind.RUNS, STORED_30, 101, runs=((0, 41), (30, 60))), "in a file of 130"),
    (Layout(LayoutKind.TAR, Block(Method.STORED, 1000, payload_size=1000), 100,
            members=(True, True)), "2 tar members do not fit"),
    (Layout(LayoutKind.TAR, Block(Method.STORED, 1024, payload_size=1024), 100,
            members=(False, False)), "a tar layout with no text member"),
    (Layout(LayoutKind.RUNS, Block(Method.MODEL, 30, n_tokens=3), 100, runs=((0, 100),)),
     "the binary stream is model-coded"),
])
def test_crafted_layouts_are_refused_in_one_line(layout, message):
    blob = _archive(layout) if layout.binary.method != Method.MODEL else \
        pack(Header(130, bytes(8), [Block(Method.STORED, 100, payload_size=100)],
                    layout=layout), [b"t" * 100, b""], [])
    with pytest.raises(CorruptArchiveError, match=message):
        unpack(blob)


def test_the_layout_option_reaches_the_archive(tiny_llama, tmp_path):
    path = tmp_path / "src.tar"
    path.write_bytes(make_tar(SOURCES))
    for layout, kind in (("none", None), ("runs", "runs"), ("auto", "tar")):
        result = CliRunner().invoke(main, ["compress", "-c", "-q", "-m", tiny_llama,
                                           "--segment-tokens", "128", "--layout", layout,
                                           str(path)])
        assert result.exit_code == 0, result.stderr
        facts = describe(result.stdout_bytes)
        assert (facts["layout"] or {}).get("kind") == kind
