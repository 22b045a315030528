#!/bin/sh
# FilterType: pipe. Silently drops a message from a blocked sender: the client is told
# 250 (so it does not retry or bounce), nothing is delivered. Use with care.
case "$SENDER" in
    *@blocked.example)
        echo "250 2.0.0 Ok: dropped" >&2
        exit 1 ;;
esac
exec cat
