"""Floor 2, the language model: modules, AdamW, the GPT, the tokenizer, checkpoints, sampling
with a KV cache, what every stage shares about token sequences, and the reward model as a
model."""
