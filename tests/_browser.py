"""Headless Chromium for page tests: load a file, return what the page's self-check recorded."""
from __future__ import annotations

import re
import shutil
import subprocess

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def load(path, timeout: float = 90.0, width: int = 1300) -> dict:
    """{"images", "broken", "errors", "overflow", "console"} of an HTML file rendered by headless Chromium in a
    window `width` pixels wide: the counts the page's own script wrote on <body> once loaded (overflow: tables,
    code blocks and images wider than the page), and console errors Chromium logged."""
    p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        f"--window-size={width},2000", "--virtual-time-budget=5000", "--dump-dom", f"file://{path}"],
                       capture_output=True, text=True, timeout=timeout)
    body = re.search(r"<body([^>]*)>", p.stdout)
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1))) if body else {}
    console = [ln for ln in p.stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "rror" in ln)]
    return {"images": int(attrs.get("images", -1)), "broken": int(attrs.get("broken", -1)),
            "errors": int(attrs.get("errors", -1)), "overflow": int(attrs.get("overflow", -1)), "console": console}


def screenshot(path, out, width: int = 1200, height: int = 3000) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={out}", f"file://{path}"],
                   capture_output=True, timeout=90)
