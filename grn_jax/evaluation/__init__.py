"""Evaluation: FID / IS / precision-recall (inception, metrics, reference, fid) and tokenizer
reconstruction metrics (recon, tokenizer_metrics)."""

# config.eval: the FID Inception weights and the image count of the tokenizer table
# (tokenizer_metrics reads both; the fid command takes flags).
EVAL_FIELDS = ("inception", "recon_num_images")
