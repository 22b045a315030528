#!/bin/sh
# FilterType: pipe. Rejects a message whose text matches a pattern, passes the rest.
# The last line on standard error with a non-zero exit is the client's reply.
# Set PATTERN in the daemon's environment to change what is refused (a fixed string,
# matched without regard to case).
pattern=${PATTERN:-'buy cheap pills'}
msg=$(mktemp) || { echo "451 4.3.0 filter cannot make a temp file" >&2; exit 1; }
trap 'rm -f "$msg"' EXIT
trap 'exit 1' HUP INT TERM    # killed at FilterTimeout: still remove the temp file
cat > "$msg"
if grep -qiF -- "$pattern" "$msg"; then
    echo "554 5.7.1 Message rejected: forbidden content" >&2
    exit 1
fi
cat "$msg"
