#!/bin/sh
# FilterType: file. Edits the message in place: tags the subject. The message is in the
# file named by $EMAIL; the filter may change it or replace it (it is re-read by name).
tmp="$EMAIL.new"
awk 'BEGIN { inhead = 1 }
     inhead && /^\r?$/ { inhead = 0 }
     inhead && tolower($0) ~ /^subject:/ { sub(/^[Ss][Uu][Bb][Jj][Ee][Cc][Tt]: */, "Subject: [filtered] ") }
     { print }' "$EMAIL" > "$tmp" && mv "$tmp" "$EMAIL" || {
    rm -f "$tmp"
    echo "451 4.3.0 filter could not edit the message" >&2
    exit 1
}
