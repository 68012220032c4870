"""The Gradio page: settings, a Generate tab, an Edit tab (mask, inpaint, extend), the results.

`App(engine).build()` returns the gr.Blocks; the callbacks are plain methods (testable without
a browser). The page keeps two things per browser session: the canvas in the editor (its HBQ
labels and pixels, so that an edit of a generated image starts from its exact labels, not from a
re-encoding) and the last results (a click on one loads it into the editor).
"""

import os
import tempfile
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from grn_jax.app import canvas
from grn_jax.app.engine import Engine, Request, Result
from grn_jax.sampling import animate

ANIMATION_FRAME_MS = 150


def _canvas(labels: np.ndarray, pixels: np.ndarray, scale: int) -> dict[str, np.ndarray]:
  return dict(labels=labels, pixels=pixels, display=canvas.upscale(pixels, scale))


def _tokens(mask: np.ndarray) -> str:
  return ", ".join(f"({i}, {j})" for i, j in zip(*np.nonzero(mask)))


class App:
  """The page of one Engine.

  Args:
    engine: the model side.
    scale: the nearest upscaling of every image shown (0: auto, so that the model's images are
      shown at least 256 pixels wide); the animation uses half of it (its frames hold three
      panels per sample, and large frames take seconds to encode).
    out_dir: where the files of each click go (the labels .npz, the animation .png); default a
      new temporary directory.
  """

  def __init__(self, engine: Engine, scale: int = 0, out_dir: str | None = None):
    self.engine = engine
    height, width = engine.image_size
    self.scale = scale if scale > 0 else max(1, 256 // max(height, width))
    self.animation_scale = max(1, self.scale // 2)
    self.out_dir = out_dir or tempfile.mkdtemp(prefix="grn_app_")
    os.makedirs(self.out_dir, exist_ok=True)
    self._count = 0

  # ---- helpers ----

  def _request(self, condition, steps, cfg_scale, temperature, adaptive, seed, animate_on):
    if condition is None or (isinstance(condition, str) and not condition.strip()):
      raise gr.Error("Choose a class (or write a prompt) first.")
    return Request(condition=condition, num_steps=int(steps), cfg_scale=float(cfg_scale),
                   temperature=float(temperature), adaptive=bool(adaptive),
                   seed=int(seed or 0), animate=bool(animate_on))

  def _path(self, suffix: str) -> str:
    self._count += 1
    return os.path.join(self.out_dir, f"{self._count:05d}{suffix}")

  def _outputs(self, result: Result, info: str):
    """(gallery, info, animation, labels file, results state) of one result."""
    shown = canvas.upscale(result.pixels, self.scale)
    gallery = [(shown[r], f"#{r}: {int(result.steps[r])} steps")
               for r in range(len(shown))]
    steps = ", ".join(str(int(s)) for s in result.steps)
    nfe = ", ".join(str(int(n)) for n in result.nfe)
    info = f"{info}\nsteps per sample: {steps} (network evaluations: {nfe})"
    labels_path = self._path(".npz")
    np.savez(labels_path, labels=result.labels, images=result.pixels, decoded=result.decoded,
             regenerate=result.regenerate, steps=result.steps, nfe=result.nfe)
    movie = None
    if result.trace is not None:
      frames = animate.refinement_frames(result.trace, result.steps,
                                          scale=self.animation_scale)
      images = [Image.fromarray(f) for f in frames]
      # An animated PNG: lossless, and five times faster to write than a GIF (no palettes).
      movie = self._path(".png")
      images[0].save(movie, save_all=True, append_images=images[1:], loop=0, compress_level=1,
                     duration=[ANIMATION_FRAME_MS] * (len(images) - 1) + [2000])
    results = [dict(labels=result.labels[r], pixels=result.pixels[r])
               for r in range(len(result.labels))]
    return gallery, info, movie, labels_path, results

  def _source(self, editor: dict[str, Any] | None, state: dict[str, np.ndarray] | None):
    """(canvas dict, token mask [hc, wc], where the canvas came from) of the editor's image."""
    background = None if editor is None else editor.get("background")
    if background is None:
      raise gr.Error("The editor is empty: generate images and click one, or upload an image.")
    rgb = canvas.to_rgb(np.asarray(background))
    mask_pixels = canvas.painted(editor.get("layers") or [], rgb.shape[:2])
    if state is not None and np.array_equal(rgb, state["display"]):
      current, origin = state, "the labels of the image in the editor"
    else:
      pixels = canvas.fit_image(rgb, self.engine.grid)
      current = _canvas(self.engine.encode(pixels), pixels, self.scale)
      origin = (f"an uploaded {rgb.shape[0]} x {rgb.shape[1]} image, centre-cropped and resized "
                f"to {pixels.shape[0]} x {pixels.shape[1]}, encoded by the tokenizer")
    regenerate = canvas.token_mask(mask_pixels, current["labels"].shape[:2])
    return current, regenerate, origin

  def _edit(self, plan: canvas.EditPlan, request: Request, keep_pixels: bool, what: str,
            origin: str):
    result = self.engine.edit(plan, request, keep_pixels=bool(keep_pixels))
    kept = int((~plan.regenerate).sum())
    outside = ("the source pixels (bit-identical)" if keep_pixels else
               "decoded from the labels (the decoder sees every token, so they can differ "
               "slightly from the source)")
    info = (f"{what}; source: {origin}. The {kept} kept tokens hold their labels exactly in "
            f"every result (checked); their pixels are {outside}.")
    overlay = canvas.token_overlay(result.pixels[0], plan.regenerate, self.scale)
    return self._outputs(result, info), overlay

  # ---- callbacks ----

  def generate(self, condition, steps, cfg_scale, temperature, adaptive, seed, animate_on,
               editor, state):
    """-> gallery, info, animation, labels file, results, editor, editor state."""
    request = self._request(condition, steps, cfg_scale, temperature, adaptive, seed,
                            animate_on)
    try:
      result = self.engine.generate(request)
    except ValueError as e:
      raise gr.Error(str(e)) from e
    outputs = self._outputs(
        result, f"generated {len(result.labels)} samples of "
                f"{self.engine.family.condition_text(condition)}, seed {request.seed}; click "
                "one to edit it")
    if editor is None or editor.get("background") is None:  # an empty editor gets the first
      first = _canvas(result.labels[0], result.pixels[0], self.scale)
      return (*outputs, self._editor_value(first), first)
    return (*outputs, gr.update(), state)

  def _editor_value(self, current: dict[str, np.ndarray]) -> dict[str, Any]:
    return dict(background=current["display"], layers=[], composite=current["display"])

  def select(self, results, evt: gr.SelectData):
    """A click on a result: it goes to the editor. -> editor, editor state, tabs."""
    if not results:
      raise gr.Error("No results yet.")
    chosen = results[evt.index]
    current = _canvas(chosen["labels"], chosen["pixels"], self.scale)
    return self._editor_value(current), current, gr.Tabs(selected="edit")

  def inpaint(self, editor, state, condition, steps, cfg_scale, temperature, adaptive, seed,
              animate_on, keep_pixels):
    """-> gallery, info, animation, labels file, results, token map, editor state."""

    def plan_of(current, regenerate):
      plan = canvas.inpaint_plan(current["labels"], current["pixels"], regenerate,
                                 self.engine.grid)
      return plan, (f"regenerated {int(regenerate.sum())} of {regenerate.size} tokens: "
                    f"{_tokens(regenerate)} (row, column)")

    return self._edit_from(editor, state, plan_of, (condition, steps, cfg_scale, temperature,
                                                    adaptive, seed, animate_on), keep_pixels)

  def extend(self, editor, state, direction, shift, condition, steps, cfg_scale, temperature,
             adaptive, seed, animate_on, keep_pixels):
    """-> gallery, info, animation, labels file, results, token map, editor state."""

    def plan_of(current, _):
      plan = canvas.outpaint_plan(current["labels"], current["pixels"], direction, int(shift),
                                  self.engine.grid)
      size = plan.labels.shape[:2]
      return plan, (f"extended {direction} by {int(shift)} token(s): the canvas is now "
                    f"{size[0]} x {size[1]} tokens")

    return self._edit_from(editor, state, plan_of, (condition, steps, cfg_scale, temperature,
                                                    adaptive, seed, animate_on), keep_pixels)

  def _edit_from(self, editor, state, plan_of, request_args, keep_pixels):
    """The edit both tabs run: the source canvas, plan_of(current, painted tokens) -> (plan,
    what changed), the sampler through fixed labels; ValueErrors shown on the page."""
    request = self._request(*request_args)
    current, regenerate, origin = self._source(editor, state)
    try:
      plan, what = plan_of(current, regenerate)
      outputs, overlay = self._edit(plan, request, keep_pixels, what, origin)
    except ValueError as e:
      raise gr.Error(str(e)) from e
    return (*outputs, overlay, current)

  # ---- the page ----

  def build(self) -> gr.Blocks:
    engine, family = self.engine, self.engine.family
    defaults = family.defaults
    height, width = engine.image_size
    grid_h, grid_w = engine.grid
    stride = canvas.TOKENIZER_STRIDE
    with gr.Blocks(title="GRN: generate and edit") as page:
      gr.Markdown(
          f"## GRN: generate and edit\n{family.describe()}: images of {height} x {width} "
          f"pixels, shown {self.scale}x. Every click samples {engine.num_samples} images.")
      with gr.Row():
        with gr.Column(scale=1):
          if family.condition_kind == "prompt":
            condition = gr.Textbox(label="prompt", lines=2, elem_id="condition")
          else:
            condition = gr.Dropdown(choices=family.condition_choices(), value=0, label="class",
                                    elem_id="condition")
          steps = gr.Slider(1, max(100, 2 * defaults["num_steps"]), step=1,
                            value=defaults["num_steps"], label="steps (fixed budget)",
                            elem_id="steps")
          cfg_scale = gr.Slider(0.0, 10.0, step=0.05, value=defaults["cfg_scale"],
                                label="guidance scale (1 = off)", elem_id="guidance")
          temperature = gr.Slider(0.05, 3.0, step=0.05, value=defaults["temperature"],
                                  label="temperature", elem_id="temperature")
          low, high = defaults["steps_range"]
          adaptive = gr.Checkbox(value=defaults["adaptive"], elem_id="adaptive",
                                 label=f"adaptive steps (the entropy gives each sample "
                                       f"{low}-{high} steps; the steps slider is then unused)")
          seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
          animate_on = gr.Checkbox(value=True, label="record the refinement animation",
                                   elem_id="animate")
          keep_pixels = gr.Checkbox(
              value=True, elem_id="keep_pixels",
              label="edits: keep the original pixels of kept tokens (exact outside the mask, "
                    "seams can show at patch borders; off: the whole canvas decoded from its "
                    "labels)")
        with gr.Column(scale=2):
          with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
              generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Tab("Edit", id="edit"):
              gr.Markdown(
                  f"Paint over what to regenerate. The model sees a grid of {grid_h} x {grid_w} "
                  f"latent tokens; each token is a {stride} x {stride}-pixel patch of the "
                  f"{height} x {width} image ({stride * self.scale} x {stride * self.scale} "
                  "here). A token is regenerated when any pixel of its patch is painted (the "
                  "token map shows which); every other token keeps its HBQ labels exactly. "
                  "Uploads are centre-cropped to the grid's aspect and resized. "
                  f"**Extend** (outpainting): this model is trained at one grid size, so the "
                  f"{grid_h} x {grid_w} window shifts past the border by the chosen number of "
                  "tokens; the tokens it still covers stay fixed, the new ones are generated "
                  "from them, and the canvas grows (extend again for a strip).")
              editor = gr.ImageEditor(
                  type="numpy", format="png", image_mode="RGBA", sources=("upload",),
                  transforms=(), layers=False, elem_id="editor", label="image to edit",
                  brush=gr.Brush(default_size=max(4, stride * self.scale // 5),
                                 colors=["#ff00ff"], color_mode="fixed"),
                  canvas_size=(width * self.scale, height * self.scale))
              inpaint_button = gr.Button("Regenerate the painted tokens (inpaint)",
                                         variant="primary", elem_id="inpaint")
              with gr.Row():
                direction = gr.Radio(list(canvas.DIRECTIONS), value="right", label="extend",
                                     elem_id="direction")
                shift = gr.Dropdown(choices=list(range(1, max(2, min(grid_h, grid_w)))),
                                    value=1, label="by tokens", elem_id="shift")
                extend_button = gr.Button("Extend (outpaint)", elem_id="extend")
              token_map = gr.Image(label="token map (regenerated tokens tinted)",
                                   format="png", interactive=False, elem_id="token_map")
          gallery = gr.Gallery(label="results (click one to edit it)", format="png",
                               columns=engine.num_samples, rows=1, height="auto",
                               object_fit="contain",   # a grown canvas is shown whole
                               elem_id="results", interactive=False)
          info = gr.Textbox(label="what happened", lines=3, interactive=False, elem_id="info")
          animation = gr.Image(label="refinement: network input, prediction, label map per step",
                               type="filepath", interactive=False, elem_id="animation")
          labels_file = gr.File(label="HBQ labels and images of the results (.npz)",
                                interactive=False, elem_id="labels_file")
      editor_state, results = gr.State(None), gr.State([])
      settings = [condition, steps, cfg_scale, temperature, adaptive, seed, animate_on]
      shown = [gallery, info, animation, labels_file, results]
      generate_button.click(self.generate, settings + [editor, editor_state],
                            shown + [editor, editor_state])
      gallery.select(self.select, [results], [editor, editor_state, tabs])
      inpaint_button.click(self.inpaint, [editor, editor_state] + settings + [keep_pixels],
                           shown + [token_map, editor_state])
      extend_button.click(self.extend,
                          [editor, editor_state, direction, shift] + settings + [keep_pixels],
                          shown + [token_map, editor_state])
    return page
