"""The small-tokenizer reconstruction trainer: straight-through HBQ, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_configs
from grn_jax.trainers import tokenizer as tokenizer_trainer


def test_hbq_straight_through_quantises_forward_and_passes_gradients():
  x = jnp.asarray([-0.99, -0.3, 0.01, 0.5, 0.97])
  y = tokenizer_trainer.hbq_straight_through(x, 4)  # 16 bin centres -1 + (2l + 1) / 16
  np.testing.assert_allclose(y, [-0.9375, -0.3125, 0.0625, 0.4375, 0.9375], atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(tokenizer_trainer.hbq_straight_through(v, 4) * 3.0))(x)
  np.testing.assert_allclose(grad, 3.0)


def test_tokenizer_train_config_is_validated():
  config = demo_configs.get_config("size=test")
  config.tokenizer_train.quantize_prob = 1.5
  with pytest.raises(ValueError, match="quantize_prob"):
    tokenizer_trainer.validate_train_config(config.tokenizer_train, 100)
  config.tokenizer_train.quantize_prob = 0.5
  with pytest.raises(ValueError, match="batch_size"):
    tokenizer_trainer.validate_train_config(config.tokenizer_train, 4)
