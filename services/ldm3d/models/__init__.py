"""Model building blocks that are not part of a request path: the offline CLIP tokenizer and random-weight checkpoints."""
