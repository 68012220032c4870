"""Imports modules of the official PyTorch GRN code for `--official=PATH` comparisons (CPU).

  denoiser = official.import_official(path, "grn.utils_c2i.denoiser")

The official code calls `.cuda()` on tensors and modules; for a CPU run those calls become
no-ops, and torch.compile is disabled. Needs PyTorch (the `torch` extra).
"""

import importlib
import os
import sys
import types


def import_official(repo: str, module: str) -> types.ModuleType:
  """Imports `module` (e.g. 'grn.models.grn_c2i') from a checkout of the official repository.

  Args:
    repo: the checkout's root (the folder that holds `grn/`).
    module: the dotted module name inside it.

  Returns:
    The imported module.

  Raises:
    ImportError: PyTorch is not installed.
    FileNotFoundError: `repo` has no such module file (not a checkout of the official code).
  """
  relative = os.path.join(*module.split(".")) + ".py"
  if not os.path.exists(os.path.join(repo, relative)):
    raise FileNotFoundError(f"--official={repo!r} is not a checkout of the official GRN "
                            f"repository (no {relative}); pass the folder that holds grn/.")
  os.environ["TORCH_COMPILE_DISABLE"] = "1"
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--official needs PyTorch: pip install -e '.[torch]' (the CPU build "
                      "is enough).") from e
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  if repo not in sys.path:
    sys.path.insert(0, repo)
  return importlib.import_module(module)
