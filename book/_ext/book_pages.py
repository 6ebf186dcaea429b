"""Small fixes to the pages the theme stack writes.

* Every script is loaded once. Under Sphinx 7.4, sphinx-thebe's inline configuration
  (``const THEBE_JS_URL = ...``) is registered twice (once when the builder starts,
  once again from the extension registry), so every page declared the same ``const``
  twice and logged "Identifier 'THEBE_JS_URL' has already been declared" (the two
  entries differ only in an empty file name, None against ""). A page keeps the first
  of identical script entries.
"""


def _key(script):
    filename = getattr(script, "filename", script) or ""  # an inline script: None or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept  # in place: Sphinx still sorts the list by priority


def setup(app):
    app.connect("html-page-context", dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
