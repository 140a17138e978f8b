"""Screenshot a report in the headless Chromium the browser tests drive (tests/browser.py):

    PYTHONPATH=src:tests python tests/screenshot.py runs/demo/report.html docs/report.png [--height 1700]

The README's picture, docs/report.png, is made this way from a finished run. Not a test (pytest collects test_*.py).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from browser import page_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="a report.html or compare.html")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1700, help="the top of the page this tall (0: the whole page)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as profile, page_for(args.page, Path(profile), args.width, args.height or 900) as (page, _, errors):
        if errors:
            raise SystemExit(f"the page raised: {errors}")
        page.screenshot(path=str(args.png), full_page=not args.height)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
