#!/bin/sh
# FilterType: pipe. Asks the client to try again later (a 4xx keeps the mail queued
# at the sender): for maintenance windows, or when a scanner is down.
echo "451 4.7.1 Content scanner unavailable, try again later" >&2
exit 1
