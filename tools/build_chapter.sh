#!/usr/bin/env bash
# Build a one-chapter book (intro + the given notebook) with warnings as errors,
# to check a chapter renders without building every other chapter.
#   tools/build_chapter.sh chapters/03_pre_post_norm.ipynb   -> /tmp/rs-chapter-<slug>/_build/html
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NB="$(realpath "$1")"
SLUG="$(basename "$NB" .ipynb)"
OUT="${2:-/tmp/rs-chapter-$SLUG}"
rm -rf "$OUT" && mkdir -p "$OUT/chapters"
cp "$ROOT/_config.yml" "$ROOT/intro.md" "$ROOT/references.bib" "$ROOT/glossary.md" "$ROOT/references.md" "$ROOT/claims.md" "$OUT/"
cp -r "$ROOT/_ext" "$OUT/"
cp -r "$ROOT/_static" "$ROOT/_extra" "$OUT/"
cp "$NB" "$OUT/chapters/"
# The intro links every chapter; in a one-chapter book those links would dangle.
sed -i -E 's/\{doc\}`([^`]*)`/`\1`/g' "$OUT/intro.md"
# So do the chapter's links to other chapters and to the lab: keep their text, drop the link.
"$ROOT/.venv/bin/python" - "$OUT/chapters/$SLUG.ipynb" <<'PY'
import json, re, sys
path = sys.argv[1]
nb = json.load(open(path, encoding="utf-8"))
here = {"claims", "glossary", "references", "intro"}
mine = path.rsplit("/", 1)[1]
link = re.compile(r"\[([^\]]+)\]\((?!https?:|mailto:|#)([^)#\s]*?\.(?:ipynb|md))(#[^)\s]*)?\)")
role = re.compile(r"\{doc\}`(?:([^`<]*?)\s*<([^`>]+)>|([^`]+))`")

def name(target):
    return target.rsplit("/", 1)[-1].rsplit(".", 1)[0]

def unlink(m):
    if m.group(2).rsplit("/", 1)[-1] == mine or name(m.group(2)) in here:
        return m.group(0)
    return m.group(1)

def unrole(m):
    target = m.group(2) or m.group(3)
    if name(target) in here or target.rsplit("/", 1)[-1] + ".ipynb" == mine:
        return m.group(0)
    return m.group(1) or f"`{target}`"

for cell in nb["cells"]:
    if cell["cell_type"] == "markdown":
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = role.sub(unrole, link.sub(unlink, text))
json.dump(nb, open(path, "w", encoding="utf-8"), ensure_ascii=False, indent=1)
PY
# The back matter comes along: chapters link glossary terms and cite keys, and the
# Claims page shows this chapter's claims (also written to $OUT/_build/claims.json).
printf 'format: jb-book\nroot: intro\nchapters:\n  - file: chapters/%s\n  - file: claims\n  - file: glossary\n  - file: references\n' "$SLUG" > "$OUT/_toc.yml"
cd "$OUT"
HF_HUB_OFFLINE=1 RS_BOOK_BUILD=1 "$ROOT/.venv/bin/jupyter-book" build . -W --keep-going
echo "built: $OUT/_build/html/chapters/$SLUG.html"
