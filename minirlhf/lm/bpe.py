"""GPT-2's tokenizer: byte-level byte-pair encoding (BPE), written out.

GPT-2 (Radford et al., 2019) tokenizes in three steps:

1. **Bytes as characters.** The text's UTF-8 bytes are mapped one to one onto 256 printable
   Unicode characters (``bytes_to_unicode``), so every string, in any script, is a sequence of
   symbols from a fixed alphabet of 256, and no text is ever "unknown".
2. **Pre-tokenizing.** A regular expression splits the text into chunks (contractions, a word
   with its leading space, a number, a run of punctuation, whitespace); merges never cross a
   chunk's border, so " dog" and "dog." share the token for "dog".
3. **Merging.** Within a chunk, the adjacent pair of symbols with the best rank in
   ``merges.txt`` (the order in which training learned them) is merged into one symbol, again
   and again until no pair has a rank. Each final symbol is looked up in ``vocab.json``
   (``encoder.json`` in OpenAI's release).

Decoding joins the symbols and maps them back to bytes; invalid UTF-8 (a multi-byte character
cut by sampling) becomes U+FFFD, as GPT-2 does.

GPT-2's pattern uses ``\\p{L}`` (letters) and ``\\p{N}`` (numbers), which Python's ``re`` lacks;
we build those classes from ``unicodedata`` instead (``letter_and_number_classes``), so no
third-party regex module is needed. The real files are not shipped: pass a folder that holds
``vocab.json`` (or ``encoder.json``) and ``merges.txt`` (or ``vocab.bpe``).
"""

from __future__ import annotations

import functools
import json
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from minirlhf.files import GPT2_TOKENIZER_FILES

END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token: document separator, BOS and EOS

# The Unicode White_Space property, which ``\s`` means in GPT-2's regex. Python's own ``\s``
# also matches U+001C..U+001F (information separators), so we spell the set out.
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
              "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def bytes_to_unicode() -> dict[int, str]:
    """The 256 bytes -> 256 printable characters. Printable Latin-1 bytes map to themselves;
    the others (control characters, space, ...) to chr(256 + k), in byte order, so that no
    symbol is whitespace or a control character. Byte 32 (space) becomes 'Ġ' (U+0120)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    mapping, shifted = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


def _class_body(predicate: str) -> str:
    """A regex character-class body covering every code point whose Unicode category starts
    with ``predicate`` ('L' letters, 'N' numbers), as ranges."""
    parts, start, prev = [], None, None
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith(predicate):
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            parts.append(re.escape(chr(start)) if start == prev else
                         f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
            start = None
    if start is not None:
        parts.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def letter_and_number_classes() -> tuple[str, str]:
    """(\\p{L}, \\p{N}) as character-class bodies for Python's ``re`` (built once, ~1 s)."""
    return _class_body("L"), _class_body("N")


@functools.lru_cache(maxsize=1)
def gpt2_pattern() -> re.Pattern[str]:
    """GPT-2's pre-tokenizing regex,

        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

    with \\p{L}, \\p{N} and \\s spelled out as classes. ``\\s+(?!\\S)`` takes a run of spaces
    but its last one, which then leads the next word: "a  b" -> ["a", " ", " b"]."""
    L, N = letter_and_number_classes()
    S = re.escape(WHITESPACE)
    return re.compile(
        rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


class BPETokenizer:
    """GPT-2's byte-level BPE. ``encoder``: symbol string -> id (vocab.json); ``merges``: the
    ranked pairs (merges.txt, best first).

    It offers the interface the stages use (``encode``, ``decode``, ``encode_batch``,
    ``vocab_size``, ``pad_id``/``bos_id``/``eos_id``). GPT-2 has one special token,
    ``<|endoftext|>``, which serves as BOS, EOS and (masked out) padding. Text is encoded as
    text: the string "<|endoftext|>" inside it is not turned into the special token.
    """

    def __init__(self, encoder: dict[str, int], merges: Sequence[tuple[str, str]]):
        self.encoder = dict(encoder)
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.ranks = {tuple(pair): r for r, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        missing = [c for c in self.byte_encoder.values() if c not in self.encoder]
        if missing:
            raise ValueError(f"BPETokenizer: the vocabulary lacks {len(missing)} of the 256 byte "
                             f"symbols (e.g. {missing[0]!r}); byte-level BPE needs all of them")
        special = self.encoder.get(END_OF_TEXT)
        self.bos_id = self.eos_id = self.pad_id = special if special is not None else -1
        self.cache: dict[str, list[str]] = {}

    @classmethod
    def from_folder(cls, folder: str | Path) -> BPETokenizer:
        """Read ``vocab.json`` + ``merges.txt`` (Hugging Face's names) or ``encoder.json`` +
        ``vocab.bpe`` (OpenAI's) from ``folder``."""
        folder = Path(folder)
        for vocab_name, merges_name in GPT2_TOKENIZER_FILES:
            if (folder / vocab_name).exists() and (folder / merges_name).exists():
                break
        else:
            raise FileNotFoundError(f"{folder}: no GPT-2 tokenizer files (vocab.json + "
                                    "merges.txt, or encoder.json + vocab.bpe)")
        encoder = json.loads((folder / vocab_name).read_text(encoding="utf-8"))
        merges = []
        lines = (folder / merges_name).read_text(encoding="utf-8").split("\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip() or (lineno == 1 and line.startswith("#version")):
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                raise ValueError(f"{folder / merges_name}:{lineno}: a merge is two symbols "
                                 f"separated by one space, got {line[:60]!r}")
            merges.append((pair[0], pair[1]))
        return cls(encoder, merges)

    @property
    def vocab_size(self) -> int:
        return max(self.decoder) + 1

    def bpe(self, chunk: str) -> list[str]:
        """Merge one pre-tokenized chunk (already in byte symbols) into vocabulary symbols."""
        if chunk in self.cache:
            return self.cache[chunk]
        symbols = list(chunk)
        # exercise bpe-merge: merge ``symbols`` (a list of str): while two or more remain, find
        # the adjacent pair with the lowest rank in self.ranks (stop if none has a rank) and merge
        # every occurrence of it, left to right; leave the merged list in ``symbols``
        ### BEGIN SOLUTION
        while len(symbols) > 1:
            # the adjacent pair that training merged first
            pairs = set(zip(symbols, symbols[1:], strict=False))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the pair, left to right
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ### END SOLUTION
        self.cache[chunk] = symbols
        return symbols

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """text -> ids, optionally framed by <|endoftext|>."""
        ids = [self.bos_id] if bos else []
        for chunk in gpt2_pattern().findall(text):
            symbols = "".join(self.byte_encoder[b] for b in chunk.encode("utf-8"))
            for s in self.bpe(symbols):
                if s not in self.encoder:
                    raise ValueError(f"BPETokenizer: merged symbol {s!r} is not in the "
                                     "vocabulary (vocab.json and merges.txt do not match)")
                ids.append(self.encoder[s])
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], stop_at_eos: bool = False) -> str:
        """ids -> text; bytes that are not valid UTF-8 become U+FFFD."""
        symbols = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and stop_at_eos:
                break
            symbols.append(self.decoder[i])
        data = bytes(self.byte_decoder[c] for c in "".join(symbols))
        return data.decode("utf-8", errors="replace")

    def encode_batch(self, texts: Sequence[str], bos: bool = True, eos: bool = False
                     ) -> np.ndarray:
        """Right-padded (B, T) int array of ``texts``, padded with ``pad_id``."""
        rows = [self.encode(t, bos=bos, eos=eos) for t in texts]
        out = np.full((len(rows), max(len(r) for r in rows)), self.pad_id, dtype=np.int64)
        for b, r in enumerate(rows):
            out[b, : len(r)] = r
        return out
