#!/bin/sh
# FilterType: file. ClamAV through clamd (Debian: apt-get install clamav-daemon clamdscan;
# clamd needs its signature database from freshclam before it starts).
# --fdpass hands clamd the open file, so it can scan our private 0600 spool file.
# A virus is refused with 554; a scanner failure is a 451, so mail waits instead of bouncing.
result=$(clamdscan --no-summary --fdpass "$EMAIL" 2>&1)
case $? in
    0) exit 0 ;;
    1) virus=$(printf '%s\n' "$result" | sed -n 's/.*: \(.*\) FOUND$/\1/p' | head -n 1)
       printf '554 5.7.1 Virus found: %s\n' "${virus:-unknown}" >&2; exit 1 ;;
    *) echo "451 4.7.1 Virus scanner unavailable, try again later" >&2; exit 1 ;;
esac
