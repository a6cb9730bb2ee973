"""Print a file's size next to its llmzip archive and the same file through gzip and zstd.

Usage: python bench/compare.py FILE FILE.llmz   (what `make demo` prints last)
"""

import sys
from pathlib import Path

from llmzip.container import describe
from llmzip.models.presets import archive_model_name
from llmzip.tools.baselines import baselines


def main(original: str, archive: str) -> None:
    data = Path(original).read_bytes()
    facts = describe(Path(archive).read_bytes())
    rows = [("original", len(data))]
    model = archive_model_name(facts["model"]) if facts["model"] else "no model"
    rows.append((f"llmzip ({model})", facts["archive_bytes"]))
    for key in ("gzip", "zstd"):
        base = baselines()[key]
        packed = base.compress(data)
        assert base.decompress(packed) == data
        rows.append((base.name, len(packed)))
    print(f"\n{'':<24}{'bytes':>8}  bits/byte")
    for name, size in rows:
        print(f"{name:<24}{size:>8,}  {8 * size / len(data):9.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
