"""How corpus/short/ was collected (run once, on a machine with the sources below).

    python corpus/short/collect.py /path/to/click.git /path/to/python3.11/lib

Three kinds of real short text, none written by llmzip's authors, each cut to messages of
60 to 600 bytes, deduplicated, shuffled with a fixed seed, then split: 15 messages a kind to
measure (KIND-test.jsonl) and up to 500 others of the same kind, disjoint from them, to
train zstd's dictionary on (KIND-train.jsonl). Provenance and licences: README.md here.
"""

from __future__ import annotations

import ast
import json
import random
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEST, TRAIN = 15, 500


def commit_messages(repo: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(repo), "log", "--format=%B%x00"], capture_output=True,
                         text=True, check=True).stdout
    return [m.strip() for m in out.split("\0")]


def news_entries(lib: Path) -> list[str]:
    entries = []
    for name in ("NEWS.txt", "NEWS2x.txt"):
        text = (lib / "idlelib" / name).read_text(encoding="utf-8")
        entries += [re.sub(r"\s*\n\s*", " ", e).strip() for e in re.split(r"\n\s*\n", text)]
    return entries


def docstrings(lib: Path) -> list[str]:
    found = []
    for path in sorted(lib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    found.append(doc)
    return found


def split(kind: str, texts: list[str]) -> None:
    chosen = sorted({t for t in texts if 60 <= len(t.encode("utf-8")) <= 600})
    random.Random(kind).shuffle(chosen)
    for part, rows in (("test", chosen[:TEST]), ("train", chosen[TEST:TEST + TRAIN])):
        with open(HERE / f"{kind}-{part}.jsonl", "w", encoding="utf-8") as f:
            for text in rows:
                f.write(json.dumps(text, ensure_ascii=False) + "\n")
    print(kind, len(chosen), file=sys.stderr)


def main() -> None:
    repo, lib = Path(sys.argv[1]), Path(sys.argv[2])
    split("commits", commit_messages(repo))
    split("news", news_entries(lib))
    split("docstrings", docstrings(lib))


if __name__ == "__main__":
    main()
