#!/usr/bin/env bash
# 01-doc-refs.sh: every path and document section named in a comment (src/,
# tests/, benches/, bpf/, scripts/, crates/, tools/), in README.md or in
# docs/*.md exists.
#
# Checked, each failure reported as FILE:LINE and the dangling reference:
#   - `docs/NAME.md §N` (or §N.M): the document exists and has a heading
#     numbered N (`## N. Title`, `### N.M Title`); a bare `§N` inside
#     docs/NAME.md means a section of that same document; a bare `§N`
#     anywhere else names no document and fails;
#   - a path beginning with src/, tests/, docs/, benches/, bpf/, scripts/,
#     crates/ or tools/:
#     the file or directory exists (globs such as tests/scripts/*.sh, and
#     paths under another directory such as ../shared/docs/x.md, are not
#     paths of this repository and are skipped).
# Only comments are read in source files (`//`, `/* */` and ` * ` lines,
# shell `#`); README.md and docs/*.md are read whole.
#
# Before checking the tree, the checker is run on a small planted tree with
# one dangling reference of each kind and must report exactly those: a
# checker that passes everything fails here. Pure bash, find, grep, awk:
# well under a second.
set -euo pipefail
export LC_ALL=C

ROOT=${XBLADE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
TMP=$(mktemp -d /tmp/xd-docrefs.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# check_tree DIR: print one line per dangling reference under DIR; exit 1
# when there is any.
check_tree() (
  cd "$1"
  find . \( -path ./target -o -path ./.git -o -path ./fuzz/target \) -prune -o -print |
    sed -e 's|^\./||' >"$TMP/exists"
  : >"$TMP/heads"
  if compgen -G 'docs/*.md' >/dev/null; then
    grep -H '^#' docs/*.md >"$TMP/heads" || true
  fi
  local files=()
  local d
  for d in src tests benches bpf scripts crates tools; do
    [[ -d $d ]] || continue
    while IFS= read -r f; do files+=("$f"); done < <(
      find "$d" -type f \( -name '*.rs' -o -name '*.sh' -o -name '*.bash' -o -name '*.c' \
        -o -name '*.h' \) ! -name 01-doc-refs.sh | sort
    )
  done
  [[ -f README.md ]] && files+=(README.md)
  if compgen -G 'docs/*.md' >/dev/null; then files+=(docs/*.md); fi
  awk -v EXISTS="$TMP/exists" -v HEADS="$TMP/heads" '
    FILENAME == EXISTS { ex[$0] = 1; next }
    FILENAME == HEADS {
      # "docs/x.md:### 1.2 Title" -> sec["docs/x.md", "1.2"]
      i = index($0, ":"); doc = substr($0, 1, i - 1); h = substr($0, i + 1)
      sub(/^#+[ \t]+/, "", h)
      if (match(h, /^[0-9]+(\.[0-9]+)*/)) sec[doc, substr(h, 1, RLENGTH)] = 1
      next
    }
    function bad(what) { printf "%s:%d: %s\n", FILENAME, FNR, what; nbad++ }
    function check_section(doc, n) {
      if (!((doc) in ex)) bad("no such document " doc)
      else if (!((doc, n) in sec)) bad(doc " has no section §" n)
    }
    {
      line = $0
      if (FILENAME ~ /\.(rs|c|h)$/) {
        if ((i = index(line, "//")) > 0) line = substr(line, i)
        else if (line !~ /^[ \t]*(\/\*|\*)/) next
      } else if (FILENAME ~ /\.(sh|bash)$/) {
        if (match(line, /(^|[ \t])#/)) line = substr(line, RSTART)
        else next
      }
      # Citations of a document section; blanked once checked.
      while (match(line, /docs\/[A-Za-z0-9_-]+\.md`? §[0-9]+(\.[0-9]+)*/)) {
        ref = substr(line, RSTART, RLENGTH)
        doc = ref; sub(/`? §.*/, "", doc)
        n = ref; sub(/.*§/, "", n)
        before = RSTART > 1 ? substr(line, RSTART - 1, 1) : ""
        if (before !~ /[A-Za-z0-9_.\/$}-]/) check_section(doc, n)
        line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
      }
      # A bare section sign: the same document inside docs/, else nothing.
      while (match(line, /§[0-9]+(\.[0-9]+)*/)) {
        n = substr(line, RSTART, RLENGTH); sub(/§/, "", n)
        if (FILENAME ~ /^docs\/[^\/]*\.md$/) check_section(FILENAME, n)
        else bad("§" n " names no document (write docs/NAME.md §" n ")")
        line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
      }
      # Paths of this repository.
      rest = line
      while (match(rest, /(src|tests|docs|benches|bpf|scripts|crates|tools)\/[A-Za-z0-9_.\/-]*/)) {
        before = RSTART > 1 ? substr(rest, RSTART - 1, 1) : ""
        p = substr(rest, RSTART, RLENGTH)
        after = substr(rest, RSTART + RLENGTH, 1)
        rest = substr(rest, RSTART + RLENGTH)
        if (before ~ /[A-Za-z0-9_.\/$}<-]/) continue
        if (after ~ /[*<{$]/) continue
        sub(/[.\/-]+$/, "", p)
        if (!(p in ex)) bad("no such path " p)
      }
    }
    END { exit nbad > 0 }
  ' "$TMP/exists" "$TMP/heads" "${files[@]}"
)

# The planted tree: one dangling reference of each kind, one good of each.
plant() {
  local t=$TMP/planted
  mkdir -p "$t/docs" "$t/src/net" "$t/tests/scripts"
  printf '# T\n\n## 1. One\n\n### 1.2 Sub\n\nSee §1.2 and §7.\n' >"$t/docs/a.md"
  cat >"$t/src/net/x.rs" <<'EOF'
//! Good: docs/a.md §1, docs/a.md §1.2, src/net/x.rs, tests/scripts/.
//! Bad section: docs/a.md §1.3.
/// Bad document: docs/b.md §1.
fn f() {} // bad path: src/net/y.rs.
// Bare: §1. Outside the repository: ../shared/docs/z.md §2, tests/scripts/*.sh.
let s = "src/not-a-comment.rs";
// Outside the repository, the old way: platform notes §3, aoe-protocol.md §1.1.
EOF
  printf '#!/bin/bash\necho tests/missing.sh # see tests/missing-too.sh\n' >"$t/tests/scripts/s.sh"
  printf '# R\n\n| `src/server.rs` | gone |\n' >"$t/README.md"
  cat >"$TMP/expected" <<'EOF'
README.md:3: no such path src/server.rs
docs/a.md:7: docs/a.md has no section §7
src/net/x.rs:2: docs/a.md has no section §1.3
src/net/x.rs:3: no such document docs/b.md
src/net/x.rs:4: no such path src/net/y.rs
src/net/x.rs:5: §1 names no document (write docs/NAME.md §1)
src/net/x.rs:7: §1.1 names no document (write docs/NAME.md §1.1)
src/net/x.rs:7: §3 names no document (write docs/NAME.md §3)
tests/scripts/s.sh:2: no such path tests/missing-too.sh
EOF
  local rc=0
  check_tree "$t" | sort >"$TMP/got" || rc=$?
  if [[ $rc -eq 0 ]] || ! diff -u "$TMP/expected" "$TMP/got"; then
    echo "01-doc-refs: FAILED: the checker does not catch the planted references (rc $rc)" >&2
    return 1
  fi
  echo "01-doc-refs: planted tree: all $(wc -l <"$TMP/expected") dangling references caught"
}

plant
if ! out=$(check_tree "$ROOT"); then
  printf '%s\n' "$out" >&2
  echo "01-doc-refs: FAILED: $(printf '%s\n' "$out" | wc -l) dangling reference(s) above" >&2
  exit 1
fi
echo "01-doc-refs: ok: every path and section named in comments, README.md and docs/ exists"
