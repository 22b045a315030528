#!/bin/sh
# FilterType: pipe. SpamAssassin through spamd (Debian: apt-get install spamd spamc).
# spamc -E exits 1 for spam; -x makes it fail instead of passing mail unchecked when spamd
# is down. Spam is refused with 554; anything that goes wrong is a 451, so mail waits
# instead of bouncing. Without spamd running, every message is deferred: start spamd first.
out=$(mktemp) || { echo "451 4.3.0 filter cannot make a temp file" >&2; exit 1; }
trap 'rm -f "$out"' EXIT
trap 'exit 1' HUP INT TERM    # killed at FilterTimeout: still remove the temp file
spamc -E -x > "$out"
case $? in
    0) cat "$out" ;;
    1) echo "554 5.7.1 Message rejected as spam" >&2; exit 1 ;;
    *) echo "451 4.7.1 Spam scanner unavailable, try again later" >&2; exit 1 ;;
esac
