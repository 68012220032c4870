"""A reconstruction trainer for small HBQ tokenizers on in-memory images (the digits demo).

The official tokenizer training (LPIPS + GAN, GRN-SPEC §C.5) is not released; this trainer is
for small data sets that fit in device memory, where a pixel loss is enough:

  f      = tanh latents of the encoder                      float32 [B, H/16, W/16, d]
  f_hbq  = f + stop_gradient(dequantize(quantize(f)) - f)   straight-through HBQ (M rounds)
  z      = f_hbq for a fraction `quantize_prob` of the examples, f for the others
  loss   = l1_weight * |decode(z) - x| + l2_weight * (decode(z) - x)^2    (mean over pixels)

so the decoder learns to read the quantised latents that the GRN will generate, while the
continuous path keeps gradients informative. The whole data set lives on the device and every
step gathers a random batch inside one jit; AdamW with linear warm-up and cosine decay.
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from grn_jax import config_check
from grn_jax import hbq
from grn_jax.models import build_tokenizer

TRAIN_FIELDS = ("steps", "batch_size", "lr", "warmup_steps", "l1_weight", "l2_weight",
                "quantize_prob", "grad_clip_norm", "log_every_steps")


@flax.struct.dataclass
class TokenizerState:
  step: jnp.ndarray           # int32 []
  params: Any
  opt_state: Any


def validate_train_config(cfg: ml_collections.ConfigDict, num_images: int) -> None:
  """config.tokenizer_train: fails naming the field."""
  config_check.check_fields(cfg, "tokenizer_train", TRAIN_FIELDS)
  if cfg.steps < 1 or cfg.batch_size < 1:
    raise ValueError(f"config.tokenizer_train.steps and batch_size must be >= 1, got "
                     f"{cfg.steps} and {cfg.batch_size}.")
  if cfg.batch_size > num_images:
    raise ValueError(f"config.tokenizer_train.batch_size={cfg.batch_size} exceeds the "
                     f"{num_images} images.")
  if not 0.0 <= cfg.quantize_prob <= 1.0:
    raise ValueError(f"config.tokenizer_train.quantize_prob must lie in [0, 1], got "
                     f"{cfg.quantize_prob}.")
  if cfg.l1_weight < 0 or cfg.l2_weight < 0 or cfg.l1_weight + cfg.l2_weight <= 0:
    raise ValueError("config.tokenizer_train.l1_weight and l2_weight must be >= 0 and not both 0.")
  if not cfg.lr > 0:
    raise ValueError(f"config.tokenizer_train.lr must be > 0, got {cfg.lr}.")


def hbq_straight_through(latent: jnp.ndarray, rounds: int) -> jnp.ndarray:
  """Quantised values forward, identity gradient backward. float [..., d] -> float32 [..., d]."""
  quantized = hbq.dequantize(hbq.quantize(latent, rounds, "ind"), rounds, "ind")
  return latent + jax.lax.stop_gradient(quantized - latent)


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  warmup = min(int(cfg.warmup_steps), int(cfg.steps) - 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warmup, 0), int(cfg.steps),
                                                end_value=cfg.lr * 0.02)
  chain = []
  if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  chain.append(optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=0.0))
  return optax.chain(*chain)


def _encode_decode(module, params, images, latent_fn: Callable[[jnp.ndarray], jnp.ndarray]):
  latents = module.apply({"params": params}, images, method="encode")
  return module.apply({"params": params}, latent_fn(latents), method="decode")


def init_params(module, image_shape: tuple[int, int, int], seed: int):
  """Encoder and decoder params for images [H, W, 3]."""
  images = jnp.zeros((1, *image_shape), jnp.float32)
  both = lambda m, x: m.decode(m.encode(x))
  return jax.jit(lambda k: module.init(k, images, method=both)["params"])(jax.random.key(seed))


def make_train_step(module, cfg: ml_collections.ConfigDict, rounds: int, tx):
  """jit((state, images [N, H, W, 3], key) -> (state, metrics)); images stay on the device."""

  def loss_fn(params, batch, quantize_mask):
    def latent_fn(latents):
      mask = quantize_mask[:, None, None, None]
      return jnp.where(mask, hbq_straight_through(latents, rounds), latents)
    recon = _encode_decode(module, params, batch, latent_fn).astype(jnp.float32)
    err = recon - batch
    l1, l2 = jnp.mean(jnp.abs(err)), jnp.mean(err**2)
    return cfg.l1_weight * l1 + cfg.l2_weight * l2, (l1, l2)

  @jax.jit
  def step(state: TokenizerState, images: jnp.ndarray, key: jax.Array):
    key = jax.random.fold_in(key, state.step)
    k_index, k_quant = jax.random.split(key)
    index = jax.random.randint(k_index, (cfg.batch_size,), 0, images.shape[0])
    batch = jnp.take(images, index, axis=0)
    quantize_mask = jax.random.uniform(k_quant, (cfg.batch_size,)) < cfg.quantize_prob
    (loss, (l1, l2)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, quantize_mask)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, l1=l1, l2=l2, grad_norm=optax.tree.norm(grads))
    return TokenizerState(state.step + 1, params, opt_state), metrics

  return step


def train_tokenizer(config: ml_collections.ConfigDict, images: np.ndarray,
                    progress: bool = True) -> tuple[Any, dict[str, float]]:
  """Trains config.tokenizer on images with config.tokenizer_train.

  Args:
    config: full config (tokenizer, tokenizer_train, model.hbq_rounds, seed).
    images: float32 [N, H, W, 3] in [-1, 1], H and W multiples of 16.
    progress: show a tqdm bar with the loss.

  Returns:
    (params, final metrics: loss, l1, l2, grad_norm averaged over the last log interval).
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % 16 or images.shape[2] % 16:
    raise ValueError(f"images must be float [N, H, W, 3] with H, W multiples of 16, got "
                     f"{images.shape}.")
  if images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
    raise ValueError(f"images must lie in [-1, 1], got [{images.min()}, {images.max()}].")
  cfg = config.tokenizer_train
  validate_train_config(cfg, len(images))
  module = build_tokenizer(config.tokenizer)
  params = init_params(module, images.shape[1:], config.seed)
  tx = make_optimizer(cfg)
  state = TokenizerState(jnp.zeros((), jnp.int32), params, tx.init(params))
  step_fn = make_train_step(module, cfg, config.model.hbq_rounds, tx)
  device_images = jnp.asarray(images)
  key = jax.random.key(config.seed + 17)

  from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm.tqdm(total=int(cfg.steps), desc="tokenizer", disable=not progress, unit="step")
  sums, count, last = None, 0, {}
  for i in range(int(cfg.steps)):
    state, metrics = step_fn(state, device_images, key)
    sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
    count += 1
    if (i + 1) % cfg.log_every_steps == 0 or i + 1 == cfg.steps:
      last = {k: float(v) / count for k, v in jax.device_get(sums).items()}
      if not np.isfinite(last["loss"]):
        raise FloatingPointError(f"tokenizer loss is {last['loss']} at step {i + 1}; lower "
                                 "config.tokenizer_train.lr.")
      sums, count = None, 0
      bar.set_postfix(loss=f"{last['loss']:.4f}", l1=f"{last['l1']:.4f}")
    bar.update(1)
  bar.close()
  return jax.device_get(state.params), last

