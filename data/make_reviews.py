"""Regenerate data/reviews.txt byte-identically: ``python data/make_reviews.py``.

The grammar and its sampler live in minirlhf/tasks/reviews.py; this script only fixes the seed
and the size, writes one review per line, and prints the corpus's exact entropy per token.
"""

from pathlib import Path

from minirlhf.tasks.reviews import make_corpus

SEED = 1234
N_REVIEWS = 20_000

if __name__ == "__main__":
    reviews, entropy = make_corpus(N_REVIEWS, SEED)
    out = Path(__file__).resolve().parent / "reviews.txt"
    out.write_text("\n".join(reviews) + "\n", encoding="ascii")
    print(f"wrote {len(reviews)} reviews to {out}; entropy {entropy:.4f} nats per token "
          "(characters + EOS)")
