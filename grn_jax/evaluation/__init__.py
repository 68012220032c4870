"""Evaluation: FID / IS / precision-recall (inception, fid_protocol, metrics, reference, fid),
FID during training (online) and tokenizer reconstruction metrics (recon, tokenizer_metrics)."""

# config.eval: the FID Inception weights and protocol (tokenizer_metrics, online), the
# reference statistics, feature network, sample count and batch of FID during training (online,
# when config.train.eval_every_steps > 0), the image count of the tokenizer table
# (tokenizer_metrics). The fid command takes flags.
EVAL_FIELDS = ("inception", "protocol", "reference", "feature_net", "num_samples", "batch_size",
               "recon_num_images")
