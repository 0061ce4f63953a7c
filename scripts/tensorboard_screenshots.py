"""Screenshots of TensorBoard's main views over two small runs, taken with headless Chromium.

    python scripts/tensorboard_screenshots.py                 # writes docs/tensorboard/*.png (the README's)
    python scripts/tensorboard_screenshots.py --out /tmp/tb   # elsewhere

Trains two tiny quickstart-config fits (ReLU and GELU, 2 layers, 60 steps, ~1 min on 2 cores) into a
temporary folder, starts TensorBoard on it, and opens each view in `VIEWS` in headless Chromium,
driven over the DevTools protocol: once the page's text (shadow roots included, where TensorBoard's
dashboards draw) shows what the view is for, it takes the screenshot. Exit status 1 when a view
never showed its cards. Needs Debian's `chromium`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "chromium"
# Small and fast, every statistic on; the two runs differ only in the activation.
RUN = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--trainer.max_steps", "200",
       "--trainer.val_check_interval", "50", "--trainer.log_every_n_steps", "10", "--model.n_layer", "2",
       "--model.n_head", "4", "--model.n_embd", "64", "--data.block_size", "64", "--data.batch_size", "16",
       "--data.val_windows", "16", "--data.probe_windows", "4"]
ACTIVATIONS = ("relu", "gelu")


class View(NamedTuple):
    address: str  # after the server's
    expected: list[str]  # texts the rendered page must show
    click: str | None = None  # the text of something to click first
    size: tuple[int, int] = (1280, 1000)


VIEWS = {
    "custom_scalars.png": View("/#custom_scalars&_smoothingWeight=0&_ignoreYOutliers=false",
                               ["entropy per layer (nats; mean over heads)", "gradient norm per block",
                                "heads in each quarter of [0, ln(T!)/T]", "residual RMS per layer"], size=(1280, 1900)),
    "heatmap.png": View("/#images&tagFilter=entropy_heatmap", ["attn/entropy_heatmap", "Show actual image size"],
                        click="Show actual image size", size=(1280, 900)),
    "hparams.png": View("/#hparams", ["model.activation", "model.lr", "val/loss", "val/ppl"], size=(1900, 600)),
    "scalars.png": View("/#scalars&tagFilter=heads_in_band&_smoothingWeight=0",
                        ["attn/heads_in_band/max_top_quarter", "attn/heads_in_band/uniform_bottom_quarter"]),
}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]


def train(logdir: Path) -> None:
    """The two small runs, one process each, logged as `logdir/small/<activation>`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for activation in ACTIVATIONS:
        fit = subprocess.run([sys.executable, "-m", "actsweep.cli", "fit", *RUN, "--model.activation", activation,
                              "--trainer.logger.save_dir", str(logdir), "--trainer.logger.name", "small",
                              "--trainer.logger.version", activation], env=env, cwd=logdir, capture_output=True, text=True)
        if fit.returncode != 0:
            raise RuntimeError(f"the {activation} run failed:\n{fit.stderr[-3000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tensorboard(logdir: Path, timeout: float = 60.0) -> Iterator[str]:
    """A TensorBoard server on `logdir` for the duration of the block; yields its address."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port),
                               "--host", "127.0.0.1", "--reload_interval", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:  # ready once it has read the runs
                with urllib.request.urlopen(f"{url}/data/runs", timeout=5) as response:
                    if json.loads(response.read()):  # the run names
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"TensorBoard did not start on {logdir}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: it
    reads commands from its fd 3 and answers on fd 4), so that a page is captured once it shows what
    it should rather than after a guessed delay."""

    def __init__(self, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        to_chrome, self._send_fd = os.pipe()
        self._recv_fd, from_chrome = os.pipe()
        child_ends = (os.dup(to_chrome), os.dup(from_chrome))

        def as_fd_3_and_4() -> None:  # dup2's copies are inheritable; every other descriptor is not (PEP 446)
            os.dup2(child_ends[0], 3)
            os.dup2(child_ends[1], 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            close_fds=False, preexec_fn=as_fd_3_and_4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_chrome, from_chrome, *child_ends):
            os.close(fd)
        self._buffer, self._id = b"", 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and wait for its answer (events in between are dropped)."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._recv_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def text(self) -> str:
        """The page's text, shadow roots included (TensorBoard's dashboards draw into them)."""
        return self.call("Runtime.evaluate", expression=PAGE_TEXT, returnByValue=True, session=True)["result"]["value"]

    def show(self, url: str, expected: list[str], size: tuple[int, int], timeout: float = 60.0) -> str:
        """Open `url` in a `size` (width, height) window and wait until its text contains every
        `expected` string (then a moment for charts to finish drawing); returns the text, whether or
        not all of them appeared."""
        width, height = size
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False,
                  session=True)
        self.call("Page.navigate", url=url, session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1.0)
            text = self.text()
            if all(e in text for e in expected):
                time.sleep(2.0)
                return self.text()
        return self.text()

    def click(self, text: str) -> None:
        """Click the element that shows `text` (a checkbox's label, say), shadow roots included."""
        self.call("Runtime.evaluate", expression=CLICK % json.dumps(text), session=True)
        time.sleep(2.0)

    def screenshot(self, png: Path) -> None:
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png", session=True)["data"]))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._send_fd)
        os.close(self._recv_fd)


# Every text node of the page, descending into shadow roots (style sheets and scripts left out).
PAGE_TEXT = """(() => {
  const out = [];
  const walk = (node) => {
    if (["STYLE", "SCRIPT", "TEMPLATE"].includes(node.nodeName)) return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) out.push(child.textContent.trim());
      else walk(child);
    }
  };
  walk(document.documentElement);
  return out.filter(Boolean).join("\\n");
})()"""

CLICK = """(() => {
  const find = (node, text) => {
    if (node.shadowRoot) { const hit = find(node.shadowRoot, text); if (hit) return hit; }
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE && child.textContent.trim() === text) return child.parentElement;
      const hit = child.nodeType === Node.ELEMENT_NODE || child.nodeType === Node.DOCUMENT_FRAGMENT_NODE ? find(child, text) : null;
      if (hit) return hit;
    }
    return null;
  };
  find(document.documentElement, %s).click();
})()"""


def shrink(png: Path, colours: int = 96) -> None:
    """A palette PNG: the screenshots are flat colours and text, so this loses nothing visible and
    keeps the committed files small."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def capture(logdir: Path, out: Path) -> dict[str, str]:
    """Screenshot every view of TensorBoard on `logdir` into `out`; each page's text by file name."""
    out.mkdir(parents=True, exist_ok=True)
    pages = {}
    with tempfile.TemporaryDirectory() as profile, tensorboard(logdir) as url:
        browser = Chromium(Path(profile))
        try:
            for name, view in VIEWS.items():
                pages[name] = browser.show(url + view.address, view.expected, view.size)
                if view.click and view.click in pages[name]:
                    browser.click(view.click)
                browser.screenshot(out / name)
                shrink(out / name)
        finally:
            browser.close()
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tensorboard", help="where the PNGs go")
    parser.add_argument("--logdir", type=Path, help="photograph these runs instead of training two")
    args = parser.parse_args(argv)
    if shutil.which(CHROMIUM) is None:
        print("needs Chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        logdir = args.logdir or Path(tmp)
        if args.logdir is None:
            train(logdir)
        pages = capture(logdir, args.out)
    missing = [f"{name}: {text!r}" for name, view in VIEWS.items() for text in view.expected if text not in pages[name]]
    for line in missing:
        print(f"not on the page: {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
