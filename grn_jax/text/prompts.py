"""Prompt strings of the official T2V example (`t2v_infer.py` of the official GRN repository).

These are data (the text the released T2V model was demonstrated with), not code. The T2I
example uses no suffix and an empty negative prompt (the pipeline's default).
"""

# Appended to every T2V prompt in `t2v_infer.py` (`f"{prompt}. masterpiece, high quality."`).
T2V_PROMPT_SUFFIX = ". masterpiece, high quality."

# The negative prompt of `t2v_infer.py` (its groups: quality, style, skin and figure, motion,
# misc), joined exactly as there.
T2V_NEGATIVE_PROMPT = (
    "ugly, blurry, low-resolution, low-detail, low-quality, noisy, grainy, "
    "overexposed, underexposed, oversaturated, undersaturated, soft focus, "
    "artifacts, compression artifacts, jpeg artifacts, flickering, "
    "painting, oil painting, illustration, drawing, sketch, cartoon, anime, manga, "
    "3d, cgi, render, digital art, "
    "plastic, waxy, glossy, fake, unnatural, "
    "plastic skin, waxy skin, over-smoothed skin, doll-like, "
    "deformed, mutated, disfigured, bad anatomy, bad hands, extra fingers, missing fingers, "
    "extra limbs, "
    "still image, static, motionless, frozen, "
    "unnatural motion, reversed motion, stuttering, choppy, "
    "text, watermark, logo, signature, username, "
    "crowded background, bad composition"
)

# The official pipeline's default negative prompt (T2I and T2V).
DEFAULT_NEGATIVE_PROMPT = ""


def t2v_prompt(prompt: str) -> str:
  """The prompt as the official T2V example sends it to the encoder (suffix appended)."""
  return f"{prompt}{T2V_PROMPT_SUFFIX}"
