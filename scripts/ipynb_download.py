"""Sphinx extension of the book: every page written as a notebook (a MyST markdown file
with a jupytext header) is offered as an .ipynb in the page's download menu.

The notebook is converted with jupytext (installed with Jupyter Book) and written next to
the copy of the page's source in the site, _build/html/_sources/<page>.ipynb, without
outputs: a reader opens it in Jupyter as it is and runs it. _config.yml loads this file
(sphinx: local_extensions); scripts/build_book.sh checks that every page got its notebook.
"""
from pathlib import Path


def notebook_source(path):
    """True when the file at path is a MyST notebook: markdown whose front matter has a
    jupytext section."""
    path = Path(path)
    if path.suffix != ".md":
        return False
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return False
    front = text[4:].split("\n---", 1)[0]
    return "\njupytext:" in "\n" + front


def add_notebook(app, pagename, templatename, context, doctree):
    """Write the page's notebook into the site and list it in the download menu (the
    theme's menu shows an .ipynb entry when the context names one)."""
    import jupytext

    env = app.builder.env
    if pagename not in env.found_docs or not notebook_source(env.doc2path(pagename)):
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(jupytext.read(env.doc2path(pagename)), target, fmt="ipynb")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # before the theme builds the download menu (priority 501)
    app.connect("html-page-context", add_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
