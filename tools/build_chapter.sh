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
# The back matter comes along: chapters link glossary terms and cite keys, and the
# Claims page shows this chapter's claims (also written to $OUT/_build/claims.json).
printf 'format: jb-book\nroot: intro\nchapters:\n  - file: chapters/%s\n  - file: claims\n  - file: glossary\n  - file: references\n' "$SLUG" > "$OUT/_toc.yml"
cd "$OUT"
HF_HUB_OFFLINE=1 RS_BOOK_BUILD=1 "$ROOT/.venv/bin/jupyter-book" build . -W --keep-going
echo "built: $OUT/_build/html/chapters/$SLUG.html"
