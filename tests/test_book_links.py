"""The exercise notebooks link the published book by URL, and every link leads to a page.

The book's address is one setting, ``html.baseurl`` in _config.yml.  Source
notebooks write ``[title](book:PAGE#anchor)``; the release turns that into the
page's address.  Against the built site (_build/html, made by ``make book``)
every book link of the release must name a page that exists, and an anchor
that the page defines.  Without the built book the site check is skipped,
except under CI, where it fails (as tests/test_browser.py does).
"""
import re
from pathlib import Path

import nbformat
import pytest

from autograder.release import BOOK_LINK, ReleaseError, book_url, link_book
from test_browser import SITE, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
# every assignment's notebooks: cnn_layers (2), cnn_network (1), conv_variants (3)
NOTEBOOKS = sorted((ROOT / "exercises").glob("*/*.ipynb"))
SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown(path):
    return "\n".join(c.source for c in nbformat.read(str(path), as_version=4).cells if c.cell_type == "markdown")


def _book_links(path):
    base = book_url(str(ROOT))
    return [url for url in MD_LINK.findall(_markdown(path)) if url.startswith(base)]


def test_release_links_the_book_by_url_only():
    assert len(NOTEBOOKS) == 6 and len(SOURCES) == 6
    base = book_url(str(ROOT))
    for path in NOTEBOOKS:
        text = _markdown(path)
        assert _book_links(path), f"{path.name} does not link the book"
        assert "book:" not in text, f"{path.name} still has an unresolved book: link"
        assert not re.search(r"book/\w+\.(md|ipynb)", text), f"{path.name} links a repository path"
        for url in MD_LINK.findall(text):
            assert url.startswith(base) or url.startswith(("http://", "https://")), url
    for path in SOURCES:
        assert BOOK_LINK.search(_markdown(path)), f"{path.name} has no book: link"


def test_link_rewriting_and_a_missing_setting(tmp_path):
    base = "https://course.example.org/book/"
    assert link_book("see [Stride](book:06_stride_padding#sec-x).", base) == \
        f"see [Stride]({base}book/06_stride_padding.html#sec-x)."
    (tmp_path / "_config.yml").write_text("title: t\nhtml:\n  use_issues_button: false\n")
    with pytest.raises(ReleaseError, match="set it to the address where the book is published"):
        book_url(str(tmp_path))
    (tmp_path / "_config.yml").write_text("html:\n  baseurl: https://course.example.org/book\n")
    assert book_url(str(tmp_path)) == base


def test_every_book_link_of_the_release_leads_to_a_built_page():
    if not (SITE / "index.html").is_file():
        skip_or_fail(f"the book is not built ({SITE} has no index.html): run make book")
    base = book_url(str(ROOT))
    checked = 0
    for path in NOTEBOOKS:
        for url in _book_links(path):
            page, _, anchor = url[len(base):].partition("#")
            target = SITE / page
            assert target.is_file(), f"{path.name} links {url}, but the built book has no {page}"
            html = target.read_text(encoding="utf-8")
            if anchor:
                assert re.search(rf'id="{re.escape(anchor)}"', html), f"{url}: no anchor #{anchor}"
            # the page knows itself by the same address (Sphinx writes html_baseurl as canonical)
            assert f'rel="canonical" href="{base}{page}"' in html, f"{page} is not published at {url}"
            checked += 1
    assert checked >= 12
