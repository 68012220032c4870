"""Input pipelines: tfds / image folders / pre-tokenized label shards / in-memory arrays."""
