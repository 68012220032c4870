"""Training: the one loop (loop.py), the shared state and optimizer (state.py), and one task per
model family (c2i.py, tokenizer.py) whose step functions are pure."""
