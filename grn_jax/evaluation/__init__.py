"""Evaluation: FID / IS / precision-recall (inception, metrics, reference, fid) and tokenizer
reconstruction metrics (recon, tokenizer_metrics)."""
