"""Incremental detokenization and stop sequences, UTF-8 safe.

`Detokenizer.push(token)` returns the text the new token completes. It decodes a small window
of recent tokens (TGI/vLLM's prefix/read offsets), which is what SentencePiece needs (a
token's leading space depends on what precedes it), and holds text back while the window ends
in an incomplete UTF-8 sequence (decoded as U+FFFD): byte-level BPE splits an emoji or a CJK
character over several tokens, and SentencePiece's byte fallback does the same.

Two ways a model's tokens can defeat that, handled so that no text is ever lost:
- bytes that never form a character (a random or sampled model may emit any byte token):
  the window is held for at most `MAX_HELD` tokens — more than any valid UTF-8 character
  spans — and then emitted as decoded, U+FFFD included, as `transformers` decodes it;
- a byte-fallback decoder that re-reads text already emitted (an invalid byte run swallows
  the byte token before it into one U+FFFD, so the window no longer starts with what was
  emitted): the new tokens' text is then decoded on its own.

`StopMatcher` finds stop sequences in the generated *text* (they may span tokens) and holds
back any tail that could still become one, so streamed text never shows part of a stop.
"""

from __future__ import annotations

from collections.abc import Sequence

_REPLACEMENT = "\ufffd"
MAX_HELD = 6  # tokens held back for an unfinished character (UTF-8: at most 4 bytes)


class Detokenizer:
    def __init__(self, tokenizer, prompt_ids: Sequence[int], skip_special_tokens: bool = True):
        """`tokenizer`: a `tokenizers.Tokenizer` (Rust) — anything with `decode(ids, skip)`."""
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        # start from a few prompt tokens so the first generated token gets its context
        context = list(prompt_ids[-4:])
        self.ids: list[int] = context
        self.prefix_offset = 0
        self.read_offset = len(context)
        self.text = ""  # everything emitted so far

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=self.skip)

    def _new_text(self) -> tuple[str, str]:
        """(the window decoded, the text its unread tokens add)."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if full.startswith(prefix):
            return full, full[len(prefix) :]
        # the decoder re-read emitted text (byte fallback): the new tokens alone
        return full, self._decode(self.ids[self.read_offset :])

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        full, new = self._new_text()
        held = len(self.ids) - self.read_offset
        if full.endswith(_REPLACEMENT) and held < MAX_HELD:
            return ""  # an unfinished character: the next token may complete it
        if not new:
            return ""  # nothing visible yet (e.g. a skipped special token)
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        self.text += new
        return new

    def flush(self) -> str:
        """At the end: whatever is still held (an unfinished UTF-8 sequence stays as decoded)."""
        _, new = self._new_text()
        self.prefix_offset = self.read_offset = len(self.ids)
        self.text += new
        return new


class StopMatcher:
    """Feeds text in, gets safe-to-emit text out; `stopped` once a stop sequence appears."""

    def __init__(self, stops: Sequence[str], include_stop: bool = False) -> None:
        self.stops = [s for s in stops if s]
        self.include_stop = include_stop
        self.pending = ""  # received, not yet emitted
        self.stopped: str | None = None  # the stop sequence that matched

    def feed(self, text: str) -> str:
        if self.stopped is not None or not text:
            return ""
        if not self.stops:
            return text
        self.pending += text
        first = None
        for stop in self.stops:
            at = self.pending.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            at, stop = first
            self.stopped = stop
            out = self.pending[: at + (len(stop) if self.include_stop else 0)]
            self.pending = ""
            return out
        hold = self._held_tail()
        out, self.pending = (
            self.pending[: len(self.pending) - hold],
            self.pending[len(self.pending) - hold :],
        )
        return out

    def _held_tail(self) -> int:
        """Length of the longest suffix of `pending` that is a proper prefix of a stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(stop[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
