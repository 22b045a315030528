#!/bin/sh
# make run: the demo capture upstream in the background, smtpsiftd in the foreground.
set -e
cd "$(dirname "$0")/.."
mkdir -p var/spool var/demo-mail
chmod 700 var/spool
node dist/examples/demo-upstream.js 10026 var/demo-mail &
upstream=$!
trap 'kill $upstream 2>/dev/null' EXIT INT TERM
echo "smtpsiftd on 127.0.0.1:10025 -> demo upstream on 127.0.0.1:10026 (mail in var/demo-mail/)"
echo "send a test mail from another terminal: node dist/examples/send-test.js"
node dist/src/cli/smtpsiftd.js -d 3 -f etc/smtpsiftd-demo.conf
