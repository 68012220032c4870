"""GRN refinement sampling: one jitted while_loop, fixed or entropy-adaptive steps.

  spec.py       SamplerSpec (static), SamplerSettings (traced), Replay, SampleOutput
  refine.py     the family-free loop (labels [B, *grid, D], cond / uncond pytrees, fixed labels)
  schedules.py  keep-ratio schedules;  guidance.py  guidance rules
  c2i.py        the class-to-image adapter (class labels, null class, config -> spec/settings)
  generate.py   resumable generation to a workdir (family-free core, FAMILIES per config.task)
  animate.py    the refinement animation;  fit_entropy.py  the entropy -> steps fit
"""
