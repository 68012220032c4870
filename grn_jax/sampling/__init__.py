"""GRN refinement sampling: one jitted while_loop, fixed or entropy-adaptive steps."""

from grn_jax.sampling.api import (ModelApply, sample, sample_grid_fn, sample_labels,
                                  sample_trajectory, settings_from_config, spec_from_config)
from grn_jax.sampling.refine import (SamplerSettings, SamplerSpec, SampleOutput, jitted_sampler,
                                     make_sampler, normalized_entropy, refinement_maps)

__all__ = ["ModelApply", "SampleOutput", "SamplerSettings", "SamplerSpec", "jitted_sampler",
           "make_sampler", "normalized_entropy", "refinement_maps", "sample", "sample_grid_fn",
           "sample_labels", "sample_trajectory", "settings_from_config", "spec_from_config"]
