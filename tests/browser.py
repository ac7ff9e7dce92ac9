"""Headless Chromium driven over the DevTools protocol, to look at a page as a person would: the
screenshot, where each plot landed on it, and what the console said. A helper for the
``browser`` tests (no tests here); also a script that makes the README's screenshot:

    python tests/browser.py topx-work/runs/<run_id>/report.html docs/report.png --height 2600
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import websocket
from PIL import Image

# Flags that work in a container without a display, a sandbox, a GPU or a network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-port=0")
PLOTS_JS = """JSON.stringify({height: document.documentElement.scrollHeight, plots:
  Array.from(document.querySelectorAll('img.plot')).map(i => { const r = i.getBoundingClientRect();
    return {name: i.dataset.plot, loaded: i.complete && i.naturalWidth > 0,
            box: [r.left + scrollX, r.top + scrollY, r.width, r.height]}; })})"""


def chromium_path() -> str | None:
    """``TOPX_TEST_CHROMIUM``, else chromium (Debian's package) or chromium-browser on PATH."""
    return os.environ.get("TOPX_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    """A page as shown: ``screenshot`` (PIL image of the whole page at 1 CSS px per pixel),
    ``plots`` (name, loaded, box [x, y, w, h] in page pixels), ``errors`` (console errors,
    uncaught exceptions and failed loads, as text)."""

    screenshot: Image.Image
    plots: list[dict]
    errors: list[str] = field(default_factory=list)


class Browser:
    """One headless Chromium with a fresh profile, driven through its first page target."""

    def __init__(self, binary: str, width: int = 1200, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="topx-chromium-")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--window-size={width},{height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.events: list[dict] = []
        self.next_id = 0
        self.ws = websocket.create_connection(self._page_socket(), timeout=60, suppress_origin=True)
        self.size = (width, height)

    def _page_socket(self) -> str:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Chromium did not start (exit status {self.proc.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            targets = json.load(answer)
        return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

    def call(self, method: str, **params) -> dict:
        """Send a command and return its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.events.append(json.loads(self.ws.recv()))

    def render(self, page: Path) -> Rendered:
        """Open ``page`` and look at all of it."""
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        width, height = self.size
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        found = json.loads(self.call("Runtime.evaluate", expression=PLOTS_JS, returnByValue=True)["result"]["value"])
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": found["height"], "scale": 1})
        image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
        return Rendered(image, found["plots"], console_errors(self.events))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def console_errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors among DevTools ``events``."""
    out = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
    return out


def blank_share(image: Image.Image, box: list[float]) -> float:
    """Share of the pixels inside ``box`` (x, y, w, h) that are (nearly) the page's white."""
    x, y, w, h = (round(v) for v in box)
    if w <= 0 or h <= 0:
        return 1.0
    crop = image.crop((x, y, x + w, y + h)).convert("L")
    return sum(crop.histogram()[245:]) / (w * h)


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot a page with headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, help="keep only the top HEIGHT pixels")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    with Browser(chromium_path() or "chromium", width=args.width) as browser:
        rendered = browser.render(args.page)
    image = rendered.screenshot
    if args.height:
        image = image.crop((0, 0, image.width, min(args.height, image.height)))
    image.save(args.out, optimize=True)
    print(json.dumps({"out": str(args.out), "size": image.size, "errors": rendered.errors}))


if __name__ == "__main__":
    main()
