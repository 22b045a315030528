#!/bin/sh
# FilterType: file. Edits the message in place: tags the subject. The message is in the
# file named by $EMAIL; the filter may change it or replace it (it is re-read by name).
tmp="$EMAIL.new"
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM    # killed at FilterTimeout: leave nothing in the spool
awk 'BEGIN { inhead = 1 }
     inhead && /^\r?$/ { inhead = 0 }
     inhead && tolower($0) ~ /^subject:/ { sub(/^[Ss][Uu][Bb][Jj][Ee][Cc][Tt]: */, "Subject: [filtered] ") }
     { print }' "$EMAIL" > "$tmp" && mv "$tmp" "$EMAIL" || {
    echo "451 4.3.0 filter could not edit the message" >&2
    exit 1
}
