"""The codec: a file to an archive and back, through segments, tokens, an engine and a coder.

`codec` (the stages, `Codec`), `settings` (what a run is asked to do), `repeats` (long
copies taken out first), `segments` (the cut, and a method for each segment), `groups`
(model segments coded in groups: to range-coder streams and back), `lockstep` (the one step loop every
decoder runs), `adapt` (what a group has read so far, mixed into the model's tables),
`rangecoder` (two-level range coding over constriction).
"""

from llmzip.codec.codec import Codec, CompressStats

__all__ = ["Codec", "CompressStats"]
