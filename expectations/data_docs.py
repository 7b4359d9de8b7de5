"""Data Docs that work offline: GX's pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from
public CDNs (and the logo from S3), so without internet they render unstyled and the index, a table drawn by
bootstrap-table, lists nothing. After each build the site gets the same libraries (`docs_assets/`, sources in its
SOURCES.md) under `static/vendor/`, and every page points at them by a path relative to itself."""

from __future__ import annotations

import os
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).with_name("docs_assets")
VENDOR = "static/vendor"

# Each CDN address GX 1.24's templates use -> the file under docs_assets that holds the same library.
CDN_FILES: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "js/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "js/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "css/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "js/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": "js/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": "css/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": "css/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": "css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": "js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": "css/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "js/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "js/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "js/vega-embed.min.js",
}
# GX's images are in the site already (static/images); the navbar asks S3 for them, and a validation page's
# favicon climbs one directory too few.
_IMAGES = re.compile(
    r'(?<=["\'])(?:https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/|(?:\.\./)*static/images/)'
)
_CDN = re.compile("|".join(re.escape(url) for url in sorted(CDN_FILES, key=len, reverse=True)) + r"(?=[\"'])")
# Subresource integrity and CORS attributes belong to the CDN copies; file:// pages would refuse them.
_SRI = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin="[^"]*")')


def build(context: Any) -> Path:
    """Build the context's Data Docs and make every page of the local site self-contained; the index's path."""
    context.build_data_docs()
    site = Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site"
    make_offline(site)
    return site / "index.html"


def make_offline(site: Path) -> int:
    """Copy the vendored libraries into `site` and point its pages at them; the number of pages rewritten.
    Idempotent: a page already pointing at its local copies is left as it is."""
    vendor = site / VENDOR
    for source in ASSETS.rglob("*"):
        if source.is_file() and source.suffix != ".md":
            target = vendor / source.relative_to(ASSETS)
            if not target.exists() or target.stat().st_size != source.stat().st_size:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
    rewritten = 0
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        root = Path(os.path.relpath(site, page.parent)).as_posix()
        new = _CDN.sub(partial(_local, root), text)
        new = _SRI.sub("", _IMAGES.sub(f"{root}/static/images/", new))
        if new != text:
            tmp = page.with_suffix(".html.tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(page)
            rewritten += 1
    return rewritten


def _local(root: str, match: re.Match[str]) -> str:
    return f"{root}/{VENDOR}/{CDN_FILES[match.group(0)]}"
