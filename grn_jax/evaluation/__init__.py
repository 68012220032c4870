"""Evaluation: FID / IS / precision-recall (inception, fid_protocol, metrics, reference, fid),
and tokenizer reconstruction metrics (recon, tokenizer_metrics)."""

# config.eval: the FID Inception weights and protocol and the image count of the tokenizer table
# (tokenizer_metrics reads them; the fid command takes flags).
EVAL_FIELDS = ("inception", "protocol", "recon_num_images")
