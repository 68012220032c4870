"""The one helper that imports the official PyTorch code for `--official=PATH` comparisons."""

import sys

import pytest

from grn_jax.benchmarks import official


def _fake_checkout(root):
  (root / "grn" / "models").mkdir(parents=True)
  (root / "grn" / "__init__.py").write_text("")
  (root / "grn" / "models" / "__init__.py").write_text("")
  (root / "grn" / "models" / "fake_net.py").write_text("VALUE = 7\n")
  return str(root)


def test_not_a_checkout_and_missing_torch_are_clear_errors(tmp_path, monkeypatch):
  monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")  # the helper sets it; restored afterwards
  with pytest.raises(FileNotFoundError, match=r"not a checkout .*grn/models/hbq_tokenizer\.py"):
    official.import_official(str(tmp_path), "grn.models.hbq_tokenizer")
  repo = _fake_checkout(tmp_path)
  monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
  with pytest.raises(ImportError, match=r"needs PyTorch: pip install -e '\.\[torch\]'"):
    official.import_official(repo, "grn.models.fake_net")


def test_imports_the_module_with_cuda_calls_as_no_ops(tmp_path, monkeypatch):
  torch = pytest.importorskip("torch")
  monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
  monkeypatch.setattr(torch.Tensor, "cuda", torch.Tensor.cuda)  # restored after the test
  monkeypatch.setattr(torch.nn.Module, "cuda", torch.nn.Module.cuda)
  monkeypatch.setattr(sys, "path", list(sys.path))
  repo = _fake_checkout(tmp_path)
  try:
    module = official.import_official(repo, "grn.models.fake_net")
    assert module.VALUE == 7 and sys.path[0] == repo
    x = torch.zeros(2)
    assert x.cuda() is x
    layer = torch.nn.Linear(2, 2)
    assert layer.cuda() is layer
  finally:
    for name in ("grn.models.fake_net", "grn.models", "grn"):
      sys.modules.pop(name, None)
