#!/bin/sh
# TransparentProxy: client. NAT REDIRECT sends the clients' connections to port 25,
# whatever their destination, to smtpsiftd on port 10025 of this gateway. smtpsiftd reads
# each connection's original destination from conntrack (SO_ORIGINAL_DST) and dials it
# from one of the gateway's own addresses. Needs the kernel's NF_CONNTRACK and REDIRECT
# (xt_REDIRECT / nft_redir); smtpsiftd needs no privilege for it.
set -e
LAN=lan0        # the interface the clients are behind
PORT=10025      # smtpsiftd's Listen port

iptables -t nat -A PREROUTING -i "$LAN" -p tcp --dport 25 -j REDIRECT --to-ports "$PORT"
# IPv6 clients too (smtpsiftd listening on [::]:10025 or an IPv6 address):
# ip6tables -t nat -A PREROUTING -i "$LAN" -p tcp --dport 25 -j REDIRECT --to-ports "$PORT"
