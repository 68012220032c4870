"""The app in a real browser: generate, paint a mask, inpaint; kept tokens stay, the masked changes.

Headless Debian Chromium driven by selenium through /usr/bin/chromedriver (never a downloaded
driver), on the app served from this process on 127.0.0.1 with a tiny random-weight model.

What "equal outside the mask" means here: the tokenizer's decoder sees every token, so decoded
pixels of a kept token can move when a neighbour is regenerated. What the app keeps exactly is
(1) the HBQ labels of every kept token (read back from the page's labels file) and, with "keep
the original pixels" on (the default), (2) the pixels of the kept tokens' 16 x 16 patches, bit
for bit, in the images the page shows. The masked token gets new labels and new pixels.
"""

import io
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from grn_jax.app import canvas
from tests.app import tiny

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SETUP = "apt-get update && apt-get install -y chromium chromium-driver (.ci/run does it as root)"

gr = pytest.importorskip("gradio", reason="pip install -r requirements-test.txt (gradio)")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="pip install -r requirements-test.txt (selenium)")
pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): {SETUP}")

# pylint: disable=g-import-not-at-top,wrong-import-position
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from grn_jax.app import ui
# pylint: enable=g-import-not-at-top,wrong-import-position

TIMEOUT_S = 240


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  engine = tiny.tiny_engine(num_samples=2)
  page_app = ui.App(engine, out_dir=str(tmp_path_factory.mktemp("app")))
  page = page_app.build()
  port = _free_port()
  page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
  yield page_app, f"http://127.0.0.1:{port}"
  page.close()


@pytest.fixture(scope="module")
def browser():
  profile = tempfile.mkdtemp(prefix="grn_chromium_")
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--disable-quic", "--window-size=1300,1700",
               f"--user-data-dir={profile}"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  yield driver
  driver.quit()
  shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition):
  # Gradio re-renders components when results arrive: an element found a moment ago can be gone.
  return WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.25,
                       ignored_exceptions=(StaleElementReferenceException,)).until(
                           lambda _: condition())


def _info(driver) -> str:
  return driver.find_element(By.CSS_SELECTOR, "#info textarea").get_attribute("value")


def _labels_href(driver) -> str | None:
  links = driver.find_elements(By.CSS_SELECTOR, "#labels_file a[href]")
  return links[0].get_attribute("href") if links else None


def _click_and_wait(driver, button_id: str) -> str:
  """Clicks a button, waits for a new labels file (every click writes one), returns its URL."""
  before = _labels_href(driver)
  driver.find_element(By.ID, button_id).click()

  def new_href():
    href = _labels_href(driver)
    return href if href not in (None, before) else None

  return _wait(driver, new_href)


def _fetch(url: str) -> bytes:
  with urllib.request.urlopen(url, timeout=30) as response:
    return response.read()


def _sources(driver, selector: str) -> list[str]:
  """The distinct image URLs under selector, in page order."""
  sources = []
  for img in driver.find_elements(By.CSS_SELECTOR, selector):
    src = img.get_attribute("src")
    if src not in sources:
      sources.append(src)
  return sources


def _shown_images(driver, scale: int, count: int) -> np.ndarray:
  """The results as the page shows them, back at the model's resolution: uint8 [B, H, W, 3]."""
  sources = _wait(driver, lambda: (lambda s: s if len(s) == count else None)(
      _sources(driver, "#results img")))
  images = []
  for src in sources:
    shown = np.asarray(Image.open(io.BytesIO(_fetch(src))).convert("RGB"))
    small = shown[::scale, ::scale]
    np.testing.assert_array_equal(canvas.upscale(small, scale), shown)  # nearest upscaling
    images.append(small)
  return np.stack(images)


def _labels(url: str) -> dict[str, np.ndarray]:
  with np.load(io.BytesIO(_fetch(url))) as data:
    return {k: data[k] for k in data.files}


def _paint_top_left_token(driver) -> None:
  """One brush stroke around the centre of token (0, 0), in page pixels of the editor's zoom."""
  driver.find_element(By.CSS_SELECTOR, "#editor button[aria-label='Brush']").click()
  editor = driver.find_element(By.ID, "editor")
  zoom = float(re.search(r"(\d+)%", editor.text).group(1)) / 100
  board = driver.find_elements(By.CSS_SELECTOR, "#editor canvas")[0].rect
  centre_x, centre_y = board["x"] + board["width"] / 2, board["y"] + board["height"] / 2
  quarter = 64 * zoom                     # a quarter of the 256-pixel image, shown zoomed
  actions = ActionBuilder(driver)
  pointer = actions.pointer_action
  pointer.move_to_location(int(centre_x - quarter - 8 * zoom), int(centre_y - quarter))
  pointer.pointer_down()
  for step in range(1, 5):
    pointer.move_to_location(int(centre_x - quarter - 8 * zoom + 4 * step * zoom),
                             int(centre_y - quarter + 2 * step * zoom))
  pointer.pointer_up()
  actions.perform()


def test_generate_paint_inpaint(app, browser):
  page_app, url = app
  scale = page_app.scale
  start = time.perf_counter()
  browser.get(url)
  _wait(browser, lambda: browser.find_elements(By.ID, "generate"))

  generated = _labels(_click_and_wait(browser, "generate"))
  assert _info(browser).startswith("generated 2 samples")
  assert "steps per sample: 3, 3" in _info(browser)
  shown = _shown_images(browser, scale, 2)
  np.testing.assert_array_equal(shown, generated["images"])
  # The refinement animation: one frame per step and the final one; three panels per sample.
  [movie_url] = _wait(browser, lambda: _sources(browser, "#animation img"))
  with Image.open(io.BytesIO(_fetch(movie_url))) as movie:
    assert movie.format == "PNG" and movie.is_animated
    assert movie.n_frames == 3 + 1 and movie.width == 3 * 32 * page_app.animation_scale
  # A second click with the same settings compiles nothing (one program per shape).
  with tiny.count_compiles() as compiles:
    again = _labels(_click_and_wait(browser, "generate"))
  assert not compiles
  np.testing.assert_array_equal(again["labels"], generated["labels"])

  # The first result went to the empty editor; paint token (0, 0) and regenerate it.
  browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Edit')]").click()
  _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#editor canvas"))
  _paint_top_left_token(browser)
  edited = _labels(_click_and_wait(browser, "inpaint"))
  assert _info(browser).startswith("regenerated 1 of 4 tokens: (0, 0)"), _info(browser)
  regenerate = np.array([[True, False], [False, False]])
  np.testing.assert_array_equal(edited["regenerate"], regenerate)

  source_labels, source_pixels = generated["labels"][0], shown[0]
  kept = ~regenerate
  # Labels: every kept token's HBQ labels are bit-identical; the masked token is sampled anew
  # (a row may draw its old labels again: the random model is peaked, so not every row).
  assert (edited["labels"][:, kept] == source_labels[kept]).all()
  changed = (edited["labels"][:, regenerate] != source_labels[regenerate]).any(axis=(1, 2))
  assert changed.any()
  # Pixels as the page shows them: kept patches bit-identical, the masked patch changed.
  result = _shown_images(browser, scale, 2)
  np.testing.assert_array_equal(result, edited["images"])
  outside = canvas.patch_mask(kept)
  assert (result[:, outside] == source_pixels[outside]).all()
  np.testing.assert_array_equal(
      (result[:, ~outside] != source_pixels[~outside]).any(axis=(1, 2)), changed)
  # The shown pixels inside are the decode of the new labels.
  decoded = page_app.engine.decode(edited["labels"])
  np.testing.assert_array_equal(result[:, ~outside], decoded[:, ~outside])
  with tiny.count_compiles() as compiles:
    _click_and_wait(browser, "inpaint")
  assert not compiles
  print(f"browser test: {time.perf_counter() - start:.1f} s")
