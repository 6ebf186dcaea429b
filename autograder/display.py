"""Display helpers shared by the book's pages."""
import re

_CDN_LINK = re.compile(r"<link[^>]*font-awesome[^>]*>", re.IGNORECASE)


def animation_html(anim, **kwargs):
    """A matplotlib animation as self-contained HTML for the page.

    matplotlib's player links Font Awesome from a CDN for its button icons; the book
    is served offline and its theme already draws those icons, so the link is dropped.
    kwargs go to ``anim.to_jshtml`` (e.g. ``default_mode="once"``).
    """
    from IPython.display import HTML

    return HTML(_CDN_LINK.sub("", anim.to_jshtml(**kwargs)))
