"""The pretrained registry end to end against a fake hub: download -> convert -> cache -> reuse
(without torch or the network), pickle trust, the offline message, --pretrained's config
assignments, export back to PyTorch, and the registry's own consistency."""

import argparse
import dataclasses
import os
import sys
import types

import jax
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import pretrained
from grn_jax import tokenizer_io
from grn_jax.convert import c2i as c2i_convert
from grn_jax.convert import tokenizer as tokenizer_convert
from tests.convert import test_tokenizer as tokenizer_helpers
from tests.models import test_grn_c2i as c2i_helpers

torch = pytest.importorskip("torch")
C2I = "GRN_ind_B"
TOKENIZER = "HBQ_image_tokenizer_16dim_M4"


@pytest.fixture(scope="module")
def official_files(tmp_path_factory):
  """Tiny checkpoints in the released containers, named as on the hub, and their state dicts."""
  folder = tmp_path_factory.mktemp("hub")
  config = c2i_configs.get_config("variant=tiny")
  c2i_sd = c2i_helpers.random_state_dict(config.model)
  as_torch = lambda sd: {k: torch.from_numpy(v) for k, v in sd.items()}
  torch.save({"model": as_torch(c2i_sd), "model_ema1": as_torch(c2i_sd),
              "model_ema2": as_torch(c2i_sd), "epoch": 599,
              "args": argparse.Namespace(model="GRN_ind_B")},
             folder / pretrained.RELEASES[C2I].hub_path)
  tokenizer_sd = tokenizer_helpers.random_state_dict(config.tokenizer)
  torch.save({"ema": as_torch(tokenizer_sd)}, folder / pretrained.RELEASES[TOKENIZER].hub_path)
  return folder, c2i_sd, tokenizer_sd


@pytest.fixture
def hub(official_files, tmp_path, monkeypatch):
  """A fake huggingface_hub serving the files, tiny configs registered, a fresh user cache."""
  folder = official_files[0]

  class Calls(list):
    offline = False

  calls = Calls()

  def hf_hub_download(repo_id, filename, cache_dir=None):
    del cache_dir
    calls.append((repo_id, filename))
    if calls.offline:
      raise ConnectionError("no network")
    return str(folder / filename)

  fake = types.ModuleType("huggingface_hub")
  fake.hf_hub_download = hf_hub_download
  monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
  monkeypatch.setenv("GRN_JAX_CACHE", str(tmp_path / "cache"))
  for name, spec in ((C2I, "configs/c2i.py:variant=tiny"),
                     (TOKENIZER, "configs/tokenizer.py:variant=tiny")):
    monkeypatch.setitem(pretrained.RELEASES, name,
                        dataclasses.replace(pretrained.RELEASES[name], config=spec))
  return calls


def test_download_convert_cache_reuse_without_torch(hub, official_files, monkeypatch, tmp_path):
  _, c2i_sd, _ = official_files
  with pytest.raises(pretrained.PickleTrustError, match="trust_pickle=True"):
    pretrained.load(C2I)
  assert not hub  # refused before anything was downloaded
  model = pretrained.load(C2I, trust_pickle=True)
  assert hub == [("bytedance-research/GRN", "GRN_ind_B_ep599.pth")]
  expected = c2i_convert.c2i_params_from_torch(c2i_sd, model.config.model)
  jax.tree.map(np.testing.assert_array_equal, model.params, expected)
  assert model.path.startswith(str(tmp_path / "cache" / "pretrained" / "GRN_ind_B-"))
  # Reuse: neither the network nor torch (an `import torch` now fails), no trust needed.
  with monkeypatch.context() as m:
    m.setitem(sys.modules, "torch", None)
    hub_calls = len(hub)
    again = pretrained.load(C2I)
    assert len(hub) == hub_calls and again.path == model.path
    jax.tree.map(np.testing.assert_array_equal, again.params, expected)
  # Another layout of the model section is another cached copy.
  scanned = c2i_configs.get_config("variant=tiny")
  scanned.model.scan_layers = not scanned.model.scan_layers
  assert pretrained.cached_path(C2I, scanned) != model.path
  # Back to PyTorch in the released container (what the official code reads).
  out = tmp_path / "export.pth"
  from grn_jax.convert import files  # pylint: disable=g-import-not-at-top
  files.export_torch("c2i", os.path.join(model.path, "params"), str(out), model.config)
  exported = torch.load(out, weights_only=True)
  assert sorted(exported) == ["epoch", "model", "model_ema1", "model_ema2"]
  assert sorted(exported["model_ema1"]) == sorted(c2i_sd)
  for key in c2i_sd:
    np.testing.assert_array_equal(exported["model_ema1"][key].numpy(), c2i_sd[key])


def test_offline_message_and_nothing_cached(hub, tmp_path):
  hub.offline = True
  with pytest.raises(OSError, match="huggingface-cli download bytedance-research/GRN "
                                    "HBQ_image_tokenizer_16dim_M4.ckpt"):
    pretrained.load(TOKENIZER)
  cache = tmp_path / "cache" / "pretrained"
  assert not cache.exists() or not os.listdir(cache)  # no half-written copy is left behind
  with pytest.raises(KeyError, match="known: GRN_ind_B"):
    pretrained.load("GRN_ind_Z")


def test_apply_to_config_points_at_model_and_tokenizer(hub, official_files):
  _, _, tokenizer_sd = official_files
  config = c2i_configs.get_config("variant=tiny")
  with pytest.raises(pretrained.PickleTrustError):
    pretrained.apply_to_config(config, C2I, "sample")
  assert not hub  # not even the tokenizer was fetched
  done = pretrained.apply_to_config(config, C2I, "sample", trust_pickle=True)
  assert [line.split("=")[0] for line in done] == ["config.tokenizer.checkpoint",
                                                  "config.sample.checkpoint"]
  assert sorted(f for _, f in hub) == ["GRN_ind_B_ep599.pth", "HBQ_image_tokenizer_16dim_M4.ckpt"]
  _, params = tokenizer_io.load_tokenizer(config.tokenizer)
  expected = tokenizer_convert.tokenizer_params_from_torch(tokenizer_sd, config.tokenizer)
  jax.tree.map(np.testing.assert_array_equal, params, expected)
  pretrained.apply_to_config(config, C2I, "train")
  assert config.train.init_from == config.sample.checkpoint
  assert len(hub) == 2  # cached: fetched once


def test_registry_names_configs_and_companions():
  for name, release in pretrained.RELEASES.items():
    config = pretrained.release_config(name)
    section = config[pretrained.SECTIONS[release.kind]]
    assert release.min_download_gb > 0 and release.params[-1] in "MB", name
    for companion in (release.tokenizer, release.text_encoder):
      if companion:
        assert companion in pretrained.RELEASES, (name, companion)
    if release.tokenizer:  # the model's labels are the tokenizer's latents
      tokenizer = pretrained.release_config(release.tokenizer).tokenizer
      assert tokenizer.latent_dim == section.latent_dim, name
  assert pretrained.RELEASES[C2I].needs_trust
  assert sum(r.needs_trust for r in pretrained.RELEASES.values()) == 1
  assert "GRN_T2V_2B" in pretrained.format_registry()
