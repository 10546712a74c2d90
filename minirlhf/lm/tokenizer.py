"""Characters <-> token ids, with distinct PAD, BOS and EOS tokens.

One fixed alphabet serves every task (movie reviews, arithmetic, worked sums), so a model
pretrained on one corpus can read another's text without surprises. PAD is never EOS: padding
is masked out, while EOS is a real token the model must learn to emit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
DEFAULT_CHARS = " abcdefghijklmnopqrstuvwxyz0123456789.,!?'+-=:"


class CharTokenizer:
    """A character-level tokenizer. Ids 0-2 are PAD, BOS, EOS; then one id per character."""

    def __init__(self, chars: str = DEFAULT_CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the alphabet repeats a character")
        self.chars = chars
        self.stoi = {c: i + len(SPECIALS) for i, c in enumerate(chars)}
        self.itos = {i: c for c, i in self.stoi.items()}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    pad_id, bos_id, eos_id = PAD, BOS, EOS

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """text -> ids, optionally framed by BOS/EOS. An unknown character is an error."""
        ids = [BOS] if bos else []
        for pos, ch in enumerate(text):
            i = self.stoi.get(ch)
            if i is None:
                raise ValueError(
                    f"CharTokenizer: unknown character {ch!r} at position {pos} of {text[:40]!r}"
                )
            ids.append(i)
        if eos:
            ids.append(EOS)
        return ids

    def decode(self, ids: Iterable[int], stop_at_eos: bool = True) -> str:
        """ids -> text. PAD and BOS are dropped; decoding stops at EOS unless told otherwise."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS and stop_at_eos:
                break
            if i < len(SPECIALS):
                continue
            out.append(self.itos[i])
        return "".join(out)

    def encode_batch(self, texts: Sequence[str], bos: bool = True, eos: bool = False) -> np.ndarray:
        """Right-padded (B, T) int array of ``texts``, PAD after each row's last token."""
        rows = [self.encode(t, bos=bos, eos=eos) for t in texts]
        T = max(len(r) for r in rows)
        out = np.full((len(rows), T), PAD, dtype=np.int64)
        for b, r in enumerate(rows):
            out[b, : len(r)] = r
        return out

    def to_json(self) -> str:
        return json.dumps({"type": "char", "chars": self.chars, "specials": list(SPECIALS)})

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        spec = json.loads(text)
        if spec.get("type") != "char" or tuple(spec.get("specials", ())) != SPECIALS:
            raise ValueError(f"CharTokenizer: not a character tokenizer spec: {text[:80]}")
        return cls(spec["chars"])
