"""Regenerate the pretraining corpora byte-identically: ``python data/make_corpora.py``.

The grammars and samplers live in minirlhf/world/; this script only fixes seeds and sizes and
writes one text per line into minirlhf/world/corpora/, where the package ships them (so a
setting ``corpus=reviews`` finds them from any directory):

- reviews.txt: 20,000 movie reviews (the main thread); prints the exact entropy per token.
- arithmetic.txt: 10,000 sums with a user's hint and an answer (the sycophancy chapter).
- scratchpad.txt: 20,000 sums of 2 to 5 terms, a third answered at once, the rest worked step
  by step (a third of those with one slip)
  (chapter 9, RL with verifiable rewards).
"""


from minirlhf.world import CORPORA, arithmetic, reviews, scratchpad

REVIEWS_SEED, N_REVIEWS = 1234, 20_000
ARITHMETIC_SEED, N_ARITHMETIC = 4321, 10_000
SCRATCHPAD_SEED, N_SCRATCHPAD = 5151, 20_000


def corpora() -> tuple[dict[str, str], float]:
    """({file name: exact file contents}, the review corpus's entropy in nats per token)."""
    texts, entropy = reviews.make_corpus(N_REVIEWS, REVIEWS_SEED)
    sums = arithmetic.make_corpus(N_ARITHMETIC, ARITHMETIC_SEED)
    pads = scratchpad.make_corpus(N_SCRATCHPAD, SCRATCHPAD_SEED)
    files = {"reviews.txt": "\n".join(texts) + "\n", "arithmetic.txt": "\n".join(sums) + "\n",
             "scratchpad.txt": "\n".join(pads) + "\n"}
    return files, entropy


if __name__ == "__main__":
    files, entropy = corpora()
    for name, text in files.items():
        (CORPORA / name).write_text(text, encoding="ascii")
        print(f"wrote {CORPORA / name} ({text.count(chr(10))} lines)")
    print(f"reviews: exact entropy {entropy:.4f} nats per token (characters + EOS)")
