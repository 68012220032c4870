r"""T2I/T2V transformer forward: time and memory in bf16 and float32, optionally next to the
official PyTorch module on the same weights (random), in the same run.

  python -m grn_jax.benchmarks.t2iv_forward                  # GRN-2B, 1024^2 image (4,096
                                                             # visual + 512 text tokens: the
                                                             # sample section of task=t2i)
  python -m grn_jax.benchmarks.t2iv_forward --official=/path/to/MGenAI/GRN --depth=4
      # + the official GRN (eager); --depth keeps the first N blocks so that two copies of the
      # weights fit in host memory (a full 2B is 8.8 GB in float32); the table says so
  python -m grn_jax.benchmarks.t2iv_forward --aot --pixels=0.41M --h_div_w=0.5625 --duration=5
      # compile only (abstract weights and inputs): XLA memory of one denoise pass at 480p x 81
      # frames (21 x 30 x 53 = 33,390 visual tokens)

Rows: `forward` = encode_text + denoise (the module's __call__), `denoise` = one sampler step
with the text prefix already cached. Peak RSS is the process high-water mark during that row's
phase (weights included), reset between phases.
"""

import gc
import importlib.util
import sys
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import t2iv as t2iv_configs
from grn_jax import resolution
from grn_jax.benchmarks import official
from grn_jax.benchmarks import timing
from grn_jax.models import build_t2iv, grn_t2iv

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("variant", "2B", "Model size: 2B, 8B or tiny.")
  flags.DEFINE_integer("depth", 0, "Keep only the first N blocks (0: all).")
  flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "Compute dtypes of our model.")
  flags.DEFINE_integer("batch", 1, "Batch (2 = one guided sampler step).")
  flags.DEFINE_integer("text_len", 512, "Text tokens (the official maximum).")
  flags.DEFINE_enum("task", "t2i", ["t2i", "t2v"], "Whose sample settings (configs/t2iv.py) "
                    "give the defaults of --pixels, --h_div_w and --duration.")
  flags.DEFINE_string("pixels", None, "Pixel bucket (grn_jax.resolution.PIXEL_BUCKETS).")
  flags.DEFINE_float("h_div_w", None, "Height / width (snapped to the nearest template).")
  flags.DEFINE_float("duration", None, "Seconds of video at 16 fps (0: an image).")
  flags.DEFINE_integer("repeats", 3, "Timed repetitions after one warm-up.")
  flags.DEFINE_string("official", None, "Path to a checkout of the official GRN repository.")
  flags.DEFINE_bool("aot", False, "Only compile denoise on abstract inputs; print its memory.")


def model_config(variant: str, depth: int, dtype: str):
  cfg = t2iv_configs.model_config(variant)
  if depth:
    cfg.update(depth=depth, block_chunks=next(c for c in range(min(cfg.block_chunks, depth), 0, -1)
                                              if depth % c == 0))
  cfg.dtype = dtype
  return cfg


def token_grid(pixels: str, h_div_w: float, duration: float) -> tuple[int, int, int]:
  """(latent frames, ph, pw) of the official pipeline for these sample settings."""
  ph, pw = resolution.latent_grid(h_div_w, pixels)
  return resolution.latent_frames(resolution.num_frames(duration)), ph, pw


def forward_flops(cfg, visual: int, text: int, batch: int) -> tuple[float, float]:
  """Matmul FLOPs (2 per multiply-add) of (encode_text, denoise)."""
  hidden, heads, kv_heads = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads
  head_dim = hidden // heads
  width = grn_t2iv.mlp_width(hidden, cfg.mlp_ratio)
  per_token = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden
  per_token += 3 * hidden * width
  labels = cfg.hbq_rounds * cfg.latent_dim
  queries = visual + 1
  text_flops = text * (cfg.depth * per_token + cfg.text_dim * hidden)
  text_flops += cfg.depth * 2 * text * text * heads * head_dim
  step = queries * (cfg.depth * per_token + 2 * labels * hidden) + visual * hidden * 2 * labels
  step += cfg.depth * 2 * queries * (queries + text) * heads * head_dim
  return 2.0 * batch * text_flops, 2.0 * batch * step


def inputs(cfg, batch: int, grid: tuple[int, int, int], text_len: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, (batch, *grid, cfg.hbq_rounds * cfg.latent_dim), dtype=np.int32)
  scale = rng.uniform(size=batch).astype(np.float32)
  features = rng.standard_normal((batch, text_len, cfg.text_dim)).astype(np.float32)
  return labels, scale, features, np.ones((batch, text_len), bool)


def time_ours(cfg, params, x, h_div_w: float, repeats: int) -> dict:
  model = build_t2iv(cfg)
  forward = jax.jit(lambda p, *a: model.apply({"params": p}, *a, h_div_w=h_div_w))
  encode = jax.jit(lambda p, f, m: model.apply({"params": p}, f, m, method="encode_text"))
  denoise = jax.jit(lambda p, l, s, t: model.apply({"params": p}, l, s, t, h_div_w=h_div_w,
                                                   method="denoise"))
  start = time.perf_counter()
  compiled = forward.lower(params, *x).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  text = encode(params, *x[2:])
  forward_s = timing.best_of(lambda: forward(params, *x), repeats)[0]
  denoise_s = timing.best_of(lambda: denoise(params, *x[:2], text), repeats)[0]
  return dict(forward=forward_s, denoise=denoise_s, compile=compile_s,
              temp=memory.temp_size_in_bytes, logits=np.asarray(forward(params, *x)))


def _import_official(repo: str):
  """The official grn.models.grn on this CPU (benchmarks/official.py), with stand-ins for the
  CUDA-only flash_attn (per-segment torch SDPA) and the import-only timm and pytz."""
  def varlen_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale=None, **_):
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs = [torch.nn.functional.scaled_dot_product_attention(
        q[a:b].transpose(0, 1), k[c:d].transpose(0, 1), v[c:d].transpose(0, 1),
        scale=softmax_scale).transpose(0, 1) for a, b, c, d in zip(cq, cq[1:], ck, ck[1:])]
    out = torch.cat(outs)
    return out if torch.is_autocast_enabled("cpu") else out.float()

  sys.modules["flash_attn"] = types.SimpleNamespace(flash_attn_varlen_func=varlen_attention)
  for name in ("flash_attn.cute", "flash_attn.ops", "flash_attn.ops.rms_norm"):
    sys.modules[name] = None
  # Imported by grn/models/grn.py but unused on this path: stand-ins where not installed.
  if importlib.util.find_spec("timm") is None:
    layers = types.SimpleNamespace(DropPath=None, drop_path=None)
    registry = types.SimpleNamespace(register_model=lambda fn: fn, layers=layers)
    sys.modules.update({"timm": types.SimpleNamespace(models=registry), "timm.models": registry,
                        "timm.models.layers": layers})
  if importlib.util.find_spec("pytz") is None:
    sys.modules["pytz"] = types.ModuleType("pytz")
  grn = official.import_official(repo, "grn.models.grn")
  import torch  # pylint: disable=g-import-not-at-top  (import_official checked it is there)
  return (torch, grn, official.import_official(repo, "grn.schedules.global_refine"),
          official.import_official(repo, "grn.utils_t2iv.hbq_util_t2iv"))


class Official:
  """The official GRN with our weights; `forward` = text prefix (KV-cached) + one visual pass,
  as its autoregressive_infer runs them (batch 1 per call, as the official sampler)."""

  def __init__(self, repo: str, cfg, params):
    from grn_jax.convert.t2iv import t2iv_params_to_torch  # pylint: disable=g-import-not-at-top
    self.torch, grn, self.refine, self.hbq = _import_official(repo)
    self.args = types.SimpleNamespace(
        detail_scale_dim=cfg.latent_dim, detail_num_lvl=2, hbq_round=cfg.hbq_rounds,
        refine_mode="ar_discrete_GRN_bit", dynamic_scale_schedule="GRN_vae_stride16",
        train_h_div_w_list="[]", video_frames=resolution.MAX_VIDEO_FRAMES, use_ada_layer_norm=0,
        temporal_compress_rate=resolution.TEMPORAL_STRIDE, add_scale_token=1, rope_type="3d")
    self.model = grn.GRN(
        types.SimpleNamespace(codebook_dim=cfg.latent_dim), arch="qwen", text_channels=cfg.text_dim,
        text_maxlen=512, embed_dim=cfg.hidden_size, depth=cfg.depth,
        num_key_value_heads=cfg.num_kv_heads, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        block_chunks=cfg.block_chunks, rope2d_normalized_by_hw=2, pn="1M",
        video_frames=resolution.MAX_VIDEO_FRAMES, other_args=self.args).eval()
    state = {k: self.torch.from_numpy(np.array(v))
             for k, v in t2iv_params_to_torch(params, cfg).items()}
    self.model.load_state_dict(state, strict=True)

  def _blocks(self, x, rope, **kw):
    for chunk in self.model.block_chunks:
      x = chunk(x=x, e0=None, attn_bias_or_two_vector=None, attn_fn=None,
                rope2d_freqs_grid=rope, **kw)
    return x

  def encode(self, features):
    model, torch = self.model, self.torch
    length = features.shape[0]
    for block in model.unregistered_blocks:
      block.attn.kv_caching(True)
    prefix, lens = model.prepare_text_conditions(
        (torch.from_numpy(features), [length], torch.tensor([0, length]), length), None, False)
    rope = model.rope2d_freqs_grid["freqs_text"][:, :, :, :, :length]
    self._blocks(prefix, rope, scale_ind="t0", context_info=self.context, last_diffusion_step=True,
                 ref_text_scale_inds=[], use_cfg=False, split_cond_uncond=lens)

  def denoise(self, labels, scale, template):
    model, torch = self.model, self.torch
    frames, height, width, dim = labels.shape
    schedule = [(frames, height, width)]
    self.args.mapped_h_div_w_template = template
    rope = self.refine.get_visual_rope_embeds(model.rope2d_freqs_grid, schedule, 0, 0, "cpu",
                                              self.args, self.context, template)
    rope = torch.cat([rope, model.rope2d_freqs_grid["freqs_text"][:, :, :, :, 512:513]], dim=4)
    onehot = self.hbq.multiclass_labels2onehot_input(
        torch.from_numpy(labels).permute(3, 0, 1, 2)[None], 2)
    x = torch.cat([model.embeds_codes2input(onehot), model.pt_embedder(torch.tensor([scale]))], 1)
    tokens = frames * height * width
    x = self._blocks(x, rope, scale_ind=0, context_info=self.context, last_diffusion_step=False,
                     ref_text_scale_inds=["t0"], use_cfg=False, split_cond_uncond=[tokens + 1])
    logits = model.get_logits_during_infer(x)[0, :tokens]
    return logits.reshape(frames, height, width, dim, 2).float().numpy()

  def run(self, x, template: float, bf16: bool, repeats: int) -> dict:
    labels, scale, features, _ = x
    self.context = self.refine.get_scale_pack_info([labels.shape[1:4]], 0, self.args)
    torch = self.torch
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def forward():
      out = []
      for b in range(len(labels)):
        self.encode(features[b])
        out.append(self.denoise(labels[b], float(scale[b]), template))
      return np.stack(out)

    def denoise():
      for b in range(len(labels)):
        self.denoise(labels[b], float(scale[b]), template)

    with torch.no_grad(), autocast:
      forward_s = timing.best_of(forward, repeats)[0]
      denoise_s = timing.best_of(denoise, repeats)[0]
      logits = forward()
    return dict(forward=forward_s, denoise=denoise_s, logits=logits)


def aot_memory(cfg, batch: int, grid, text_len: int, h_div_w: float) -> None:
  model = build_t2iv(cfg)
  x = inputs(cfg, 1, (1, 1, 1), 1)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *x)["params"])
  head_dim = cfg.hidden_size // cfg.num_heads
  kv = jax.ShapeDtypeStruct((cfg.depth, batch, text_len, cfg.num_kv_heads, head_dim),
                            jnp.float32)
  text = grn_t2iv.TextCache(kv, kv, jax.ShapeDtypeStruct((batch, text_len), jnp.bool_))
  labels = jax.ShapeDtypeStruct((batch, *grid, cfg.hbq_rounds * cfg.latent_dim), jnp.int32)
  scale = jax.ShapeDtypeStruct((batch,), jnp.float32)
  denoise = jax.jit(lambda p, l, s, t: model.apply({"params": p}, l, s, t, h_div_w=h_div_w,
                                                   method="denoise"))
  start = time.perf_counter()
  memory = denoise.lower(abstract, labels, scale, text).compile().memory_analysis()
  tokens = int(np.prod(grid))
  print(f"\nAOT denoise, GRN-{FLAGS.variant} (depth {cfg.depth}), {cfg.dtype}, batch {batch}, "
        f"{grid[0]} x {grid[1]} x {grid[2]} = {tokens:,} visual + {text_len} text tokens, "
        f"attention {cfg.attention_impl} -> "
        f"{jax.devices()[0].platform} ({time.perf_counter() - start:.0f} s to compile)")
  for name in ("argument", "output", "temp"):
    print(f"  {name + ' bytes':<16}{getattr(memory, f'{name}_size_in_bytes') / 2**30:>8.2f} GiB")


def sample_settings(task: str, pixels, h_div_w, duration) -> tuple[str, float, float]:
  """(pixels, h_div_w, duration): the flags where given, else the task's config defaults."""
  sample = t2iv_configs.get_config(f"variant=tiny,task={task}").sample
  return (sample.pixels if pixels is None else pixels,
          sample.h_div_w if h_div_w is None else h_div_w,
          sample.duration if duration is None else duration)


def main(argv):
  del argv
  pixels, h_div_w, duration = sample_settings(FLAGS.task, FLAGS.pixels, FLAGS.h_div_w,
                                              FLAGS.duration)
  grid = token_grid(pixels, h_div_w, duration)
  template = resolution.nearest_template(h_div_w)
  if FLAGS.aot:
    for dtype in FLAGS.dtypes:
      aot_memory(model_config(FLAGS.variant, FLAGS.depth, dtype), FLAGS.batch, grid,
                 FLAGS.text_len, template)
    return
  base = model_config(FLAGS.variant, FLAGS.depth, "float32")
  x = inputs(base, FLAGS.batch, grid, FLAGS.text_len)
  timing.reset_peak_rss()
  params = jax.jit(lambda k: build_t2iv(base).init(k, *x)["params"])(jax.random.key(0))
  text_flops, step_flops = forward_flops(base, int(np.prod(grid)), FLAGS.text_len, FLAGS.batch)
  rows, logits = [], {}
  for dtype in FLAGS.dtypes:
    gc.collect()
    timing.reset_peak_rss()
    result = time_ours(model_config(FLAGS.variant, FLAGS.depth, dtype), params, x, template,
                       FLAGS.repeats)
    rows.append((f"grn_jax {dtype} (jit)", result, timing.peak_rss_gib()))
    logits[dtype] = result["logits"]
  if FLAGS.official:
    official = Official(FLAGS.official, base, params)
    for bf16 in (True, False):
      gc.collect()
      timing.reset_peak_rss()
      result = official.run(x, template, bf16, FLAGS.repeats)
      name = "official bf16 autocast" if bf16 else "official float32"
      rows.append((name, result, timing.peak_rss_gib()))
      logits[name] = result["logits"]
  print(f"\nGRN-{FLAGS.variant} forward, {base.depth} of "
        f"{t2iv_configs.VARIANTS[FLAGS.variant]['depth']} blocks, batch {FLAGS.batch}, "
        f"{grid[0]} x {grid[1]} x {grid[2]} visual + {FLAGS.text_len} text tokens, "
        f"{jax.devices()[0].platform}; GFLOP/s of forward ({(text_flops + step_flops) / 1e9:.4g} "
        f"GFLOP) and denoise ({step_flops / 1e9:.4g} GFLOP)")
  if FLAGS.official:
    print("official: eager PyTorch, one prompt per call as its sampler; its attention inputs are "
          "cast to bf16 in both rows, as the released code does")
  print(f"{'implementation':<28}{'forward s':>10}{'GFLOP/s':>9}{'denoise s':>11}{'GFLOP/s':>9}"
        f"{'peak RSS':>10}{'compile s':>11}{'XLA temp':>10}")
  for name, r, rss in rows:
    compile_s = f"{r['compile']:.1f}" if "compile" in r else "-"
    temp = f"{r['temp'] / 2**30:.2f}G" if "temp" in r else "-"
    print(f"{name:<28}{r['forward']:>10.3f}{(text_flops + step_flops) / r['forward'] / 1e9:>9.1f}"
          f"{r['denoise']:>11.3f}{step_flops / r['denoise'] / 1e9:>9.1f}{rss:>9.2f}G"
          f"{compile_s:>11}{temp:>10}")
  reference = logits.get("official float32", logits.get("float32"))
  if reference is not None:
    for name, value in logits.items():
      print(f"max |logits({name}) - reference| = {np.abs(value - reference).max():.2e}")


if __name__ == "__main__":
  timing.run(define_flags, main)
