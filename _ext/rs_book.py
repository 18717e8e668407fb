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
    _setup_claims(app)
    _setup_static_pages(app)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# --------------------------------------------------------------------------- citations
# Author–year citations in round brackets: {cite:p} gives "(Elhage et al., 2021)" and
# {cite:t} "Elhage et al. (2021)". sphinxcontrib-bibtex's author_year style uses square
# brackets; this registers the same style with round ones as "author_year_round"
# (_config.yml: bibtex_reference_style). Registered on import, before the config is read.

def _register_round_citations():
    import dataclasses

    try:
        import sphinxcontrib.bibtex.plugin as _plugin
        from sphinxcontrib.bibtex.style.referencing import BracketStyle
        from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle
    except ImportError:  # the bibliography extension is not installed: nothing to register
        return

    def round_brackets() -> BracketStyle:
        return BracketStyle(left="(", right=")", sep="; ")

    @dataclasses.dataclass
    class RoundAuthorYear(AuthorYearReferenceStyle):
        bracket_parenthetical: BracketStyle = dataclasses.field(default_factory=round_brackets)
        bracket_textual: BracketStyle = dataclasses.field(default_factory=round_brackets)
        bracket_author: BracketStyle = dataclasses.field(default_factory=round_brackets)
        bracket_label: BracketStyle = dataclasses.field(default_factory=round_brackets)
        bracket_year: BracketStyle = dataclasses.field(default_factory=round_brackets)

    _plugin.register_plugin("sphinxcontrib.bibtex.style.referencing", "author_year_round", RoundAuthorYear, force=True)


_register_round_citations()


# --------------------------------------------------------------------------- claims and evidence
# Each claim a chapter registers (helpers.claims) is displayed under its cell as
# <details class="rs-claim ..." id="claim-ch4-fact-site" data-claim="{json}">.
# The records are collected from every document's doctree when it is read, kept
# on the environment (so parallel and incremental builds see all of them), and
# turned into the "Claims and evidence" tables when that page is written (after
# every document has been read), and into _build/claims.json when the build ends.

import html as _html
import json as _json
import re as _re
from pathlib import Path as _Path

from docutils import nodes as _nodes
from sphinx.util import logging as _logging
from sphinx.util.docutils import SphinxDirective as _SphinxDirective

_log = _logging.getLogger(__name__)
_CLAIM_TAG = _re.compile(r'<details class="rs-claim\b[^"]*" id="([^"]+)" data-claim="([^"]*)"')
_TABLE_PARTS = ("summary", "findings", "identities")


class rs_claims_table(_nodes.General, _nodes.Element):
    """Where a claims table goes; replaced by HTML once every chapter has been read."""


def _skip(self, node):
    raise _nodes.SkipNode


def _claims_store(env) -> dict:
    if not hasattr(env, "rs_claims"):
        env.rs_claims = {"records": {}, "pages": set()}
    return env.rs_claims


class ClaimsTableDirective(_SphinxDirective):
    """``{rs-claims-table} summary|findings|identities``: part of the Claims and evidence page."""

    required_arguments = 1
    has_content = False

    def run(self):
        part = self.arguments[0].strip()
        if part not in _TABLE_PARTS:
            raise self.error(f"rs-claims-table takes one of {_TABLE_PARTS}, got {part!r}.")
        _claims_store(self.env)["pages"].add(self.env.docname)
        return [rs_claims_table(part=part)]


def claims_in_doctree(doctree) -> list[dict]:
    """Every claim record displayed in a doctree, in page order: ``{"anchor", "record"}``."""
    found = []
    for node in doctree.findall(_nodes.raw):
        if "html" not in node.get("format", "").split():
            continue
        for m in _CLAIM_TAG.finditer(node.astext()):
            found.append({"anchor": m.group(1), "record": _json.loads(_html.unescape(m.group(2)))})
    return found


def _collect_claims(app, doctree):
    docname = app.env.docname
    found = claims_in_doctree(doctree)
    seen = set()
    for c in found:
        if c["anchor"] in seen:
            _log.warning(f"claim {c['record'].get('id')} is displayed twice on this page (anchor {c['anchor']})",
                         location=docname, type="rs", subtype="claims")
        seen.add(c["anchor"])
    for cid in _claims_not_shown(app, docname, seen):
        _log.warning(f"claim {cid} ran but its output is not on the page (a remove-output or remove-cell tag?); "
                     "the Claims page links to each claim's output, so keep it visible (hide-output is fine)",
                     location=docname, type="rs", subtype="claims")
    store = _claims_store(app.env)
    if found:
        store["records"][docname] = found
    else:
        store["records"].pop(docname, None)


def _claims_not_shown(app, docname, anchors) -> list[str]:
    """Claims in the executed notebook's outputs (myst-nb's jupyter_execute copy) missing from the page."""
    executed = _Path(app.outdir).parent / "jupyter_execute" / (docname + ".ipynb")
    if not executed.exists():
        return []
    try:
        nb = _json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    missing = []
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            body = (out.get("data") or {}).get("text/html", "")
            body = "".join(body) if isinstance(body, list) else str(body)
            for m in _CLAIM_TAG.finditer(body):
                if m.group(1) not in anchors:
                    missing.append(_json.loads(_html.unescape(m.group(2))).get("id", m.group(1)))
    return missing


def _purge_claims(app, env, docname):
    store = _claims_store(env)
    store["records"].pop(docname, None)
    store["pages"].discard(docname)


def _merge_claims(app, env, docnames, other):
    mine, theirs = _claims_store(env), _claims_store(other)
    for d in docnames:
        if d in theirs["records"]:
            mine["records"][d] = theirs["records"][d]
        if d in theirs["pages"]:
            mine["pages"].add(d)


def _claims_page_outdated(app, env, added, changed, removed):
    # The claims page shows every chapter's records: re-read it whenever any document changes.
    if added or changed or removed:
        return sorted(_claims_store(env)["pages"] - set(added) - set(changed) - set(removed))
    return []


def _check_claim_ids(app, env):
    where: dict[str, str] = {}
    for docname, found in sorted(_claims_store(env)["records"].items()):
        for c in found:
            cid = c["record"].get("id")
            if cid in where and where[cid] != docname:
                _log.warning(f"claim id {cid} is registered on two pages: {where[cid]} and {docname}",
                             location=docname, type="rs", subtype="claims")
            where.setdefault(cid, docname)


def all_claims(env) -> list[tuple[str, str, dict]]:
    """``(docname, anchor, record)`` for every claim of the build, by page and then page order."""
    out = []
    for docname, found in sorted(_claims_store(env)["records"].items()):
        out += [(docname, c["anchor"], c["record"]) for c in found]
    return out


def _g(x, spec=".3g") -> str:
    if x is None:
        return "—"
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def _author_year(entry) -> str:
    import codecs

    import latexcodec  # noqa: F401  (registers the "ulatex" codec)

    def clean(s):
        try:
            s = codecs.decode(s, "ulatex")
        except Exception:
            pass
        return s.replace("{", "").replace("}", "")

    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [clean(" ".join(p.last_names) or str(p)) for p in people]
    year = entry.fields.get("year", "")
    if not names:
        who = clean(entry.fields.get("title", entry.key))
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {year}" if year else who


def _cite_links(app, env, fromdoc, keys) -> str:
    """Author–year links to the book's references page (or any list that has the key)."""
    try:
        citations = env.get_domain("cite").citations
    except Exception:  # sphinxcontrib-bibtex not loaded
        citations = []
    parts = []
    for key in keys:
        matches = [c for c in citations if c.key == key]
        matches.sort(key=lambda c: (c.bibliography_key.docname != "references", c.bibliography_key.docname))
        if not matches:
            _log.warning(f"the claims table cites {key!r}, which is in no bibliography of the book "
                         "(add it to references.bib)", location=fromdoc, type="rs", subtype="claims")
            parts.append(f"<code>{_html.escape(key)}</code>")
            continue
        c = matches[0]
        uri = app.builder.get_relative_uri(fromdoc, c.bibliography_key.docname) + "#" + c.citation_id
        try:
            title = c.formatted_entry.text.render_as("text")
        except Exception:
            title = key
        parts.append(f'<a class="reference internal" href="{_html.escape(uri)}" title="{_html.escape(title)}" '
                     f'data-key="{_html.escape(key)}">{_html.escape(_author_year(c.entry))}</a>')
    return "; ".join(parts)


_CLAIMS_CSS = """<style>
.rs-claims-scroll{overflow-x:auto;max-width:100%;margin:0 0 1.5em}
table.rs-claims-table{width:100%;border-collapse:collapse;font-size:.85em;line-height:1.4}
table.rs-claims-table th,table.rs-claims-table td{vertical-align:top;text-align:left;padding:.4em .5em;
 border-bottom:1px solid var(--pst-color-border,#d0d0d0);overflow-wrap:break-word}
table.rs-claims-table td.rs-c-claim{min-width:16em;width:38%}
table.rs-claims-table td.rs-c-null{min-width:8em}
table.rs-claims-table td.rs-c-test{min-width:6em}
.rs-c-kind{font-size:.75em;padding:0 .35em;border-radius:3px;border:1px solid var(--pst-color-border,#d0d0d0);
 color:var(--pst-color-text-muted,#646464);white-space:nowrap}
table.rs-claims-table td.rs-c-num{white-space:nowrap;font-variant-numeric:tabular-nums}
table.rs-claims-table td.rs-c-num{min-width:6.5em}
table.rs-claims-table td.rs-c-num .rs-c-model{white-space:normal}
.rs-c-why{display:block;font-size:.85em;color:var(--pst-color-text-muted,#646464)}
.rs-c-id{font-family:var(--pst-font-family-monospace,monospace);font-size:.9em}
tr.rs-c-bad td{background:rgba(200,40,40,.08)}
@media (max-width:720px){
 table.rs-claims-table thead{display:none}
 table.rs-claims-table,table.rs-claims-table tbody,table.rs-claims-table tr,table.rs-claims-table td{display:block;width:100%}
 table.rs-claims-table tr{border:1px solid var(--pst-color-border,#d0d0d0);border-radius:4px;margin:0 0 .8em}
 table.rs-claims-table td{border:none;padding:.25em .6em;min-width:0}
 table.rs-claims-table td.rs-c-claim,table.rs-claims-table td.rs-c-null,table.rs-claims-table td.rs-c-num,
 table.rs-claims-table td.rs-c-test{min-width:0;width:100%;box-sizing:border-box}
 table.rs-claims-table td.rs-c-num{white-space:normal}
 table.rs-claims-table td::before{content:attr(data-label);display:block;font-size:.78em;font-weight:600;
  color:var(--pst-color-text-muted,#646464)}
}
</style>"""


def _claim_status(r) -> str | None:
    if r["kind"] == "identity":
        return None if r.get("passed") else "failed"
    if r.get("null_passes"):
        return "its null passes too"
    if not r.get("passed"):
        return f"not reproduced on {r.get('model') or 'this model'}"
    return None


def _claim_row(app, env, fromdoc, docname, anchor, r) -> str:
    e = _html.escape
    href = app.builder.get_relative_uri(fromdoc, docname) + "#" + anchor
    status = _claim_status(r)
    kind = "finding" if r["kind"] == "finding" else "check of the code"
    why = r.get("tolerance_why", "")
    claim = (f'<a class="rs-c-id reference internal" href="{e(href)}">{e(r["id"])}</a> '
             f'<span class="rs-c-kind">{kind}</span><br>{e(r["statement"])}'
             + (f'<span class="rs-c-why">{"Threshold" if r["kind"] == "finding" else "Tolerance"}: {e(why)}</span>'
                if why else "")
             + (f'<span class="rs-c-why"><strong>✘ {e(status)}</strong></span>' if status else ""))
    cells = [("Claim", "rs-c-claim", claim)]
    if r["kind"] == "finding":
        n = r.get("null") or {}
        model = r.get("measured_on") or "a model the chapter trains itself"
        if r.get("measured_on") and r.get("model") and r["model"] != r["measured_on"]:
            model += f" (this build ran {r['model']})"
        ref = _cite_links(app, env, fromdoc, r.get("reference") or [])
        if r.get("where"):
            ref += f' <span class="rs-c-why">{e(r["where"])}</span>'
        cells += [
            ("Value", "rs-c-num", e(_g(r["value"])) + f'<span class="rs-c-why">margin {e(_g(r.get("margin"), "+.3g"))}</span>'
             f'<span class="rs-c-why rs-c-model">on {e(model)}</span>'),
            ("Comparison", "rs-c-test", e(r["comparison"])),
            ("Null", "rs-c-null", f'{e(n.get("what", "—"))} = <span class="rs-c-num">{e(_g(n.get("value")))}</span>'
                         f'<span class="rs-c-why">{e(n.get("kind", ""))}</span>'),
            ("Reference", "", ref or "—"),
        ]
    else:
        cells += [
            ("Max difference", "rs-c-num", e(_g(r["value"], ".2g"))
             + f'<span class="rs-c-why">margin {e(_g(r.get("margin"), "+.2g"))}</span>'),
            ("Tolerance", "rs-c-test", e(r["comparison"])),
            ("Model", "", e(r.get("model") or "—")),
        ]
    tds = "".join(f'<td class="{c}" data-label="{e(label)}">{body}</td>' for label, c, body in cells)
    return f'<tr class="rs-claim-row{" rs-c-bad" if status else ""}" data-claim-id="{e(r["id"])}">{tds}</tr>'


def _claims_table_html(app, env, fromdoc, part) -> str:
    e = _html.escape
    rows = all_claims(env)
    findings = [x for x in rows if x[2].get("kind") == "finding"]
    checks = [x for x in rows if x[2].get("kind") == "identity"]
    if part == "summary":
        if not rows:
            return "<p><strong>No claims were recorded in this build.</strong></p>"
        docs = sorted({d for d, _, _ in rows})
        items = []
        for d in docs:
            nf = sum(1 for x in findings if x[0] == d)
            ni = sum(1 for x in checks if x[0] == d)
            title = env.titles[d].astext() if d in env.titles else d
            href = app.builder.get_relative_uri(fromdoc, d)
            items.append(f'<li><a class="reference internal" href="{e(href)}">{e(title)}</a>: '
                         f"{nf} finding{'s' * (nf != 1)}, {ni} check{'s' * (ni != 1)} of the code</li>")
        bad_null = [x[2]["id"] for x in findings if x[2].get("null_passes")]
        not_here = [x[2]["id"] for x in findings if not x[2].get("passed") and not x[2].get("null_passes")]
        lines = [f"<p><strong>{len(findings)} finding{'s' * (len(findings) != 1)}</strong> and "
                 f"<strong>{len(checks)} check{'s' * (len(checks) != 1)} of the code</strong> "
                 f"from {len(docs)} chapter{'s' * (len(docs) != 1)}.</p>", "<ul>" + "".join(items) + "</ul>"]
        lines.append("<p>" + (f"{len(bad_null)} finding{' has' if len(bad_null) == 1 else 's have'} a null that also passes: "
                               f"{e(', '.join(bad_null))}."
                              if bad_null else "For every finding, its null fails the comparison the finding passes.")
                     + (f" {len(not_here)} finding{'s' * (len(not_here) != 1)} did not hold on the model this build ran: {e(', '.join(not_here))}."
                        if not_here else "") + "</p>")
        kinds: dict[str, int] = {}
        for x in findings:
            k = (x[2].get("null") or {}).get("kind", "none")
            kinds[k] = kinds.get(k, 0) + 1
        if kinds:
            lines.append("<p>The nulls the findings are tested against: "
                         + ", ".join(f"{e(k)} {n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
                         + ".</p>")
        return _CLAIMS_CSS + '<div class="rs-claims-summary">' + "".join(lines) + "</div>"
    chosen = findings if part == "findings" else checks
    if not chosen:
        return "<p>None recorded in this build.</p>"
    if part == "findings":
        head = ["Claim", "Value (model)", "Comparison", "Null", "Reference"]
    else:
        head = ["Check", "Max difference", "Tolerance", "Model"]
    out = []
    for d in sorted({x[0] for x in chosen}):
        mine = [x for x in chosen if x[0] == d]
        title = env.titles[d].astext() if d in env.titles else d
        word = ("finding" if part == "findings" else "check") + ("s" if len(mine) != 1 else "")
        out.append(f'<p class="rs-claims-chapter"><strong>{e(title)}</strong> · {len(mine)} {word}</p>')
        body = "".join(_claim_row(app, env, fromdoc, dd, a, r) for dd, a, r in mine)
        ths = "".join(f"<th>{h}</th>" for h in head)
        out.append(f'<div class="rs-claims-scroll"><table class="rs-claims-table rs-claims-{part}">'
                   f"<thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table></div>")
    return "".join(out)


def _fill_claims_tables(app, doctree, docname):
    for node in list(doctree.findall(rs_claims_table)):
        if app.builder.format != "html":
            node.replace_self([])
            continue
        node.replace_self(_nodes.raw("", _claims_table_html(app, app.env, docname, node["part"]), format="html"))


def claims_json(app, env) -> list[dict]:
    """The rows of ``_build/claims.json``: the main fields, the page URL, and the full record."""
    rows = []
    for docname, anchor, r in all_claims(env):
        rows.append({
            "id": r.get("id"),
            "chapter": r.get("chapter"),
            "document": docname,
            "url": app.builder.get_target_uri(docname) + "#" + anchor,
            "kind": r.get("kind"),
            "statement": r.get("statement"),
            "value": r.get("value"),
            "comparison": r.get("comparison"),
            "null": r.get("null"),
            "margin": r.get("margin"),
            "passed": r.get("passed"),
            "null_passes": r.get("null_passes"),
            "measured_on": r.get("measured_on"),
            "model": r.get("model"),
            "reference": r.get("reference"),
            "where": r.get("where"),
            "record": r,
        })
    return rows


def _write_claims_json(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    path = _Path(app.outdir).parent / "claims.json"
    path.write_text(_json.dumps(claims_json(app, app.env), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _setup_claims(app):
    app.add_node(rs_claims_table, html=(_skip, None), latex=(_skip, None), text=(_skip, None))
    app.add_directive("rs-claims-table", ClaimsTableDirective)
    app.connect("doctree-read", _collect_claims)
    app.connect("env-purge-doc", _purge_claims)
    app.connect("env-merge-info", _merge_claims)
    app.connect("env-get-outdated", _claims_page_outdated)
    app.connect("env-check-consistency", _check_claim_ids)
    app.connect("doctree-resolved", _fill_claims_tables)
    app.connect("build-finished", _write_claims_json)


# --------------------------------------------------------------------------- what a static page needs
# A page loads plotly.js only when it has a figure; MathJax also on pages whose only
# math sits in a table from helpers.show_table; the theme's 1.5 MB icon script is cut
# down to the icons the site's pages use; and an exercise stub's output (the checker's
# "not attempted" return value) is not shown: without a kernel there is nothing to try.

_STUB = _re.compile(r"^\s*raise NotImplementedError\b", _re.M)
_CHECKER_CALL = _re.compile(r"^\S*check_\w+\(.*\)\s*;?\s*$", _re.M)
_ICON_CLASS = _re.compile(r"\bfa-([a-z0-9-]+)")
# One icon in fontawesome.js: name:[width,height,[aliases],"unicode","path" or [paths]]
_ICON_ENTRY = _re.compile(r'(?P<name>"[a-z0-9-]+"|[a-z][a-z0-9]*):\[\d+,\d+,\[(?P<aliases>[^\]]*)\],"[0-9a-f]+",'
                          r'(?:"[^"]*"|\[[^\]]*\])\]')


def _hide_stub_outputs(app, doctree):
    """Drop the outputs of exercise stubs (code cells whose function still raises NotImplementedError),
    and the ``False`` a checker returns under a prediction stub (``guess = ...``)."""
    for cell in list(doctree.findall(_nodes.container)):
        if "cell" not in cell.get("classes", []):
            continue
        source = "".join(n.astext() for n in cell.findall(_nodes.literal_block)
                         if "cell_input" in (n.parent.get("classes", []) if n.parent else []))
        if not source:
            inputs = [c for c in cell.children if "cell_input" in c.get("classes", [])]
            source = "".join(c.astext() for c in inputs)
        if _STUB.search(source):
            for child in list(cell.children):
                if "cell_output" in child.get("classes", []):
                    cell.remove(child)
        elif _CHECKER_CALL.search(source):  # a prediction stub: its checker returned False (not attempted)
            for out in list(cell.findall(_nodes.literal_block)):
                if "text_plain" in out.get("classes", []) and out.astext().strip() == "False":
                    parent = out.parent
                    parent.remove(out)
                    while parent is not cell and not parent.children and parent.parent is not None:
                        parent, child = parent.parent, parent
                        parent.remove(child)


def _page_math(app, pagename, templatename, context, doctree):
    """Before Sphinx decides whether the page loads MathJax: math in a show_table table counts."""
    if 'class="math notranslate nohighlight">\\(' in (context.get("body", "") or ""):
        app.env.get_domain("math").data["has_equations"][pagename] = True


def _page_scripts(app, pagename, templatename, context, doctree):
    """After every extension added its scripts: no plotly.js on a page without a figure."""
    body = context.get("body", "") or ""
    files = context.get("script_files")
    if files and "rs-figure" not in body:
        context["script_files"] = [js for js in files
                                   if not str(getattr(js, "filename", js) or "").endswith("plotly.min.js")]


def _subset_icons(app, exception):
    """Keep in fontawesome.js only the icons some page of the site uses (1.5 MB -> a few KB of paths)."""
    if exception is not None or app.builder.format != "html":
        return
    out = _Path(app.outdir)
    script = out / "_static" / "scripts" / "fontawesome.js"
    if not script.exists():
        return
    used = set()
    for page in out.rglob("*.html"):
        used |= set(_ICON_CLASS.findall(page.read_text(encoding="utf-8", errors="replace")))
    text = script.read_text(encoding="utf-8")

    def keep(m):
        names = {m.group("name").strip('"')} | {a.strip('"') for a in m.group("aliases").split(",") if a}
        return m.group(0) if names & used else ""

    slim = _ICON_ENTRY.sub(keep, text)
    # removing entries leaves stray commas inside the icon objects
    slim = _re.sub(r"\{,+", "{", _re.sub(r",+\}", "}", _re.sub(r"(?<=[\]\"]),{2,}(?=[\"a-z])", ",", slim)))
    script.write_text(slim, encoding="utf-8")


def _setup_static_pages(app):
    app.connect("doctree-read", _hide_stub_outputs)
    app.connect("html-page-context", _page_math, priority=400)  # before sphinx.ext.mathjax (500)
    app.connect("html-page-context", _page_scripts, priority=950)
    app.connect("build-finished", _subset_icons)
