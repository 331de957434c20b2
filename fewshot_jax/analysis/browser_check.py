"""Open a report in a real headless browser and count the figures that rendered.

A report is one self-contained HTML file with its figures as embedded PNGs. Checking the
text is not enough to know that a reader sees them: this opens the page in Chromium (or
Chrome) with a small script that, once the page has loaded, records how many images it
holds and how many decoded to a non-empty picture, then reads the browser's DOM back.
Optionally it also saves a screenshot of the page.

    python -m fewshot_jax.analysis.browser_check runs/demo/report.html [--screenshot=PNG]

Exit status 0 when every figure rendered, 1 when some did not, 2 when no browser was
found (install one from the system packages, e.g. ``apt install chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')

# Appended to a copy of the page: after load, note image counts on <body> for --dump-dom.
_PROBE = """
<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter((im) => !im.complete || im.naturalWidth === 0);
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-broken', String(broken.length));
});
</script>
"""


class BrowserNotFound(RuntimeError):
    """No headless-capable Chromium or Chrome on PATH."""


def find_browser() -> str | None:
    """Path of the first Chromium/Chrome executable on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_browser(browser: str, args: list[str], timeout: float) -> str:
    command = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'{Path(browser).name} failed ({done.returncode}): {done.stderr[-1000:]}')
    return done.stdout


def check_report(html: str | Path, screenshot: str | Path | None = None, timeout: float = 120) -> dict:
    """Renders ``html`` in a headless browser; returns ``{'images', 'broken', 'browser'}``.

    Raises:
        FileNotFoundError: ``html`` is not a file.
        BrowserNotFound: no Chromium/Chrome on PATH.
        RuntimeError: the browser failed or its DOM did not carry the counts.
    """
    html = Path(html)
    if not html.is_file():
        raise FileNotFoundError(f'{html}: no such report file')
    browser = find_browser()
    if browser is None:
        raise BrowserNotFound(f'no headless browser found (looked for {", ".join(BROWSERS)} on PATH)')
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / html.name
        probed.write_text(html.read_text() + _PROBE)
        dom = _run_browser(
            browser, ['--virtual-time-budget=10000', '--dump-dom', probed.resolve().as_uri()], timeout
        )
    found = {key: re.search(rf'data-{key}="(\d+)"', dom) for key in ('images', 'broken')}
    if not all(found.values()):
        raise RuntimeError(f'{html}: the browser returned a page without the image counts')
    if screenshot is not None:
        _run_browser(
            browser,
            [
                '--window-size=1400,5000',
                f'--screenshot={Path(screenshot).resolve()}',
                html.resolve().as_uri(),
            ],
            timeout,
        )
    return {
        'images': int(found['images'].group(1)),
        'broken': int(found['broken'].group(1)),
        'browser': Path(browser).name,
    }


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if not a.startswith('--screenshot=')]
    shots = [a.split('=', 1)[1] for a in argv[1:] if a.startswith('--screenshot=')]
    if len(args) != 1:
        print('usage: python -m fewshot_jax.analysis.browser_check REPORT.html [--screenshot=PNG]')
        return 2
    try:
        result = check_report(args[0], shots[0] if shots else None)
    except BrowserNotFound as err:
        print(f'error: {err}')
        return 2
    print(f'{args[0]}: {result["images"]} figures, {result["broken"]} not rendered ({result["browser"]})')
    return 0 if result['broken'] == 0 and result['images'] > 0 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
