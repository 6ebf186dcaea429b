"""Sphinx extension of the book: every page written as a notebook (a MyST markdown file
with a jupytext header) is offered as an .ipynb in the page's download menu.

The notebook is converted with jupytext (installed with Jupyter Book) and written next to
the copy of the page's source in the site, _build/html/_sources/<page>.ipynb, without
outputs: a reader opens it in Jupyter as it is and runs it. _config.yml loads this file
(sphinx: local_extensions); scripts/build_book.sh checks that every page got its notebook.

Jupyter reads markdown cells as plain Markdown, not MyST, so the page's MyST markup is
turned into what Jupyter shows (plain_markdown):

* admonitions (``{admonition}``, ``{note}``, ``{tip}``, dropdowns...) become blockquotes
  that open with their title in bold;
* display math keeps its number: ``$$ ... $$ (label)`` and ``{math}`` become
  ``$$ ... \\tag{2.3} $$``, with the number the page shows;
* cross-references become links to the published page: ``{eq}`` to "(2.3)", ``{doc}`` to
  the page's title, ``{ref}`` and ``{numref}`` to the section or figure; ``{download}`` and
  any other role keep their text, ``{math}`` becomes ``$...$``;
* ``{figure}`` and ``{image}`` become a Markdown image with its caption in italics, code
  directives become fenced code, other directives keep their content;
* labels ``(name)=`` and ``%`` comments are dropped.

Code blocks and math are copied as they are.
"""
import posixpath
import re
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


# ----------------------------------------------------------------------------- MyST to Markdown

ADMONITIONS = {"admonition", "note", "tip", "hint", "important", "warning", "caution",
               "attention", "danger", "error", "seealso", "dropdown", "topic", "sidebar"}
CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "literalinclude"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[\w:.-]+)\}\s*(?P<arg>.*)$")
_OPTION = re.compile(r"^\s*:[\w-]+:(\s.*)?$")
_LABEL = re.compile(r"^\s*\([\w:./-]+\)=\s*$")
_COMMENT = re.compile(r"^\s*%")
_MATH_OPEN = re.compile(r"^\s*\$\$(?P<rest>.*)$")
_MATH_CLOSE = re.compile(r"^(?P<body>.*?)\$\$\s*(?:\((?P<label>[^)\s]+)\))?\s*$")
_ROLE = re.compile(r"\{(?P<role>[\w:.-]+)\}`(?P<content>[^`]*)`")
_TARGET = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)


class Plain:
    """How references read in a notebook: numbers, titles and addresses of the
    published book. The methods return None where the book has no such target."""

    def equation(self, label):          # -> (number, url)
        return None

    def document(self, target):         # -> (title, url)
        return None

    def label(self, label):             # -> (title, url, number or None)
        return None


def _closing(lines, start, fence):
    """Index of the line that closes a fence opened with `fence` (len(lines) if none)."""
    close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    for j in range(start, len(lines)):
        if close.match(lines[j]):
            return j
    return len(lines)


def _split_options(body):
    """A directive's body without its options (``:key: value`` lines or a YAML block),
    and the options as a dict."""
    options, rest = {}, list(body)
    if rest and rest[0].strip() == "---":
        end = next((k for k in range(1, len(rest)) if rest[k].strip() == "---"), None)
        if end is not None:
            for line in rest[1:end]:
                key, _, value = line.partition(":")
                options[key.strip()] = value.strip()
            rest = rest[end + 1:]
    while rest and _OPTION.match(rest[0]):
        key, _, value = rest.pop(0).strip()[1:].partition(":")
        options[key] = value.strip()
    return options, rest


def _quote(lines):
    return [f"> {line}" if line.strip() else ">" for line in lines]


def _tagged_math(body, label, refs):
    numbered = refs.equation(label) if label else None
    tag = [rf"\tag{{{numbered[0]}}}"] if numbered else []
    return ["$$", *[b for b in body if b.strip()], *tag, "$$"]


def _directive(name, arg, body, refs):
    options, body = _split_options(body)
    if name in ADMONITIONS:
        title = arg.strip() or name.capitalize()
        return _quote([f"**{_inline(title, refs)}**", "", *_convert(body, refs)]) + [""]
    if name == "math":
        return _tagged_math(body, options.get("label"), refs)
    if name in ("figure", "image"):
        caption = " ".join(line.strip() for line in _convert(body, refs)).strip()
        alt = options.get("alt") or caption or "figure"
        lines = [f"![{alt}]({arg.strip()})"]
        return lines + (["", f"*{caption}*"] if caption else []) + [""]
    if name in CODE_DIRECTIVES:
        return [f"```{arg.strip()}", *body, "```"]
    return _convert(body, refs)


def _role(match, refs):
    role, content = match.group("role"), match.group("content")
    explicit = _TARGET.match(content)
    text, target = (explicit.group("text"), explicit.group("target")) if explicit \
        else (None, content)
    if role == "math":
        return f"${content}$"
    if role == "eq":
        found = refs.equation(target)
        return f"[({found[0]})]({found[1]})" if found else (text or "the equation")
    if role == "doc":
        found = refs.document(target)
        return f"[{text or found[0]}]({found[1]})" if found else (text or target)
    if role in ("ref", "numref"):
        found = refs.label(target)
        if not found:
            return text or target
        title, url, number = found
        if role == "numref":
            shown = (text or "Fig. {number}").replace("{number}", number or "") \
                .replace("%s", number or "")
        else:
            shown = text or title
        return f"[{shown}]({url})"
    if role == "download":
        return text or posixpath.basename(target)
    return text if text is not None else content


def _inline(line, refs):
    return _ROLE.sub(lambda m: _role(m, refs), line)


def _convert(lines, refs):
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            j = _closing(lines, i + 1, fence.group("fence"))
            directive = _DIRECTIVE.match(fence.group("info").strip())
            if directive:
                out += _directive(directive.group("name"), directive.group("arg"),
                                  lines[i + 1:j], refs)
            else:                        # a code block: as it is
                out += lines[i:j + 1]
            i = j + 1
            continue
        math = _MATH_OPEN.match(line)
        if math:
            rest = math.group("rest")
            closed = _MATH_CLOSE.match(rest)
            if closed:                   # $$ ... $$ (label) on one line
                out += _tagged_math([closed.group("body")], closed.group("label"), refs)
                i += 1
                continue
            body, j = [rest] if rest.strip() else [], i + 1
            while j < len(lines) and not _MATH_CLOSE.match(lines[j]):
                body.append(lines[j])
                j += 1
            closed = _MATH_CLOSE.match(lines[j]) if j < len(lines) else None
            if closed and closed.group("body").strip():
                body.append(closed.group("body"))
            out += _tagged_math(body, closed.group("label") if closed else None, refs)
            i = j + 1
            continue
        if not (_LABEL.match(line) or _COMMENT.match(line)):
            out.append(_inline(line, refs))
        i += 1
    return out


def plain_markdown(text, refs=None):
    """The MyST markdown `text` as plain Markdown that Jupyter shows as the book does
    (see the module's docstring); refs (a Plain) gives numbers, titles and addresses."""
    lines = _convert(text.split("\n"), refs or Plain())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


class BookReferences(Plain):
    """Plain's answers for one page of the built book, from Sphinx's environment."""

    def __init__(self, env, docname, base_url):
        self.env, self.docname, self.base = env, docname, base_url.rstrip("/") + "/"
        self.numbers = env.toc_fignumbers

    def url(self, docname, anchor=""):
        return f"{self.base}{docname}.html" + (f"#{anchor}" if anchor else "")

    def equation(self, label):
        found = self.env.get_domain("math").equations.get(label)
        if not found:
            return None
        docname = found[0]
        anchor = f"equation-{label}"
        number = self.numbers.get(docname, {}).get("displaymath", {}).get(anchor)
        shown = ".".join(map(str, number)) if number else str(found[1])
        return shown, self.url(docname, anchor)

    def document(self, target):
        if target.startswith("/"):
            docname = target.lstrip("/")
        else:
            docname = posixpath.normpath(posixpath.join(posixpath.dirname(self.docname),
                                                        target))
        docname = re.sub(r"\.(md|ipynb|rst)$", "", docname)
        if docname not in self.env.titles:
            return None
        return self.env.titles[docname].astext(), self.url(docname)

    def label(self, label):
        std = self.env.get_domain("std")
        found = std.labels.get(label) or std.anonlabels.get(label)
        if not found:
            return None
        docname, anchor = found[0], found[1]
        title = found[2] if len(found) > 2 and found[2] else label
        number = None
        for kind in ("figure", "table", "code-block"):
            numbers = self.numbers.get(docname, {}).get(kind, {})
            if anchor in numbers:
                number = ".".join(map(str, numbers[anchor]))
        return title, self.url(docname, anchor), number


def add_notebook(app, pagename, templatename, context, doctree):
    """Write the page's notebook into the site and list it in the download menu (the
    theme's menu shows an .ipynb entry when the context names one)."""
    import jupytext

    env = app.builder.env
    if pagename not in env.found_docs or not notebook_source(env.doc2path(pagename)):
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    notebook = jupytext.read(env.doc2path(pagename))
    refs = BookReferences(env, pagename, app.config.html_baseurl or "")
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = plain_markdown(cell.source, refs)
    jupytext.write(notebook, target, fmt="ipynb")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    # before the theme builds the download menu (priority 501)
    app.connect("html-page-context", add_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
