"""Sphinx extension for The Residual Stream's build.

Jupyter Book 1 always loads sphinx-thebe, whose inline configuration script is
emitted twice per page (a console error) and points at a CDN. The book offers
Colab instead of live code on the page, so this extension drops thebe's
scripts from every page.
"""


def _drop_thebe(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return
    kept = []
    for js in files:
        name = str(getattr(js, "filename", js) or "")
        body = str(getattr(js, "attributes", {}).get("body", "")) if hasattr(js, "attributes") else ""
        if "thebe" in name or "THEBE_JS_URL" in body:
            continue
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
