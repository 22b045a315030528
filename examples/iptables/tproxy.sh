#!/bin/sh
# TransparentProxy: full. TPROXY hands the clients' connections to port 25 to smtpsiftd's
# listener on 10025 without rewriting them (the listener has IP_TRANSPARENT, so the kernel
# lets it accept connections addressed to anyone); smtpsiftd then connects to the original
# destination from the client's own address, with IP_TRANSPARENT, so the server sees the
# client. Needs the kernel's TPROXY target (xt_TPROXY / nft_tproxy), the socket match
# (xt_socket / nft_socket), and CAP_NET_ADMIN in smtpsiftd.
set -e
LAN=lan0        # the interface the clients are behind
PORT=10025      # smtpsiftd's Listen port (0.0.0.0; a 127.0.0.1 listener needs --on-ip 127.0.0.1)
MARK=0x1

# Packets marked below are delivered locally, whatever their destination address.
# Without this the client's SYN is forwarded instead and never reaches smtpsiftd.
ip rule add fwmark "$MARK/$MARK" lookup 100
ip route add local 0.0.0.0/0 dev lo table 100

iptables -t mangle -N DIVERT
iptables -t mangle -A DIVERT -j MARK --set-xmark "$MARK/$MARK"
iptables -t mangle -A DIVERT -j ACCEPT
# Packets of connections that already have a transparent socket here (the server's replies
# to smtpsiftd's client-sourced connection, the client's later segments) go to that socket
# instead of being forwarded.
iptables -t mangle -A PREROUTING -p tcp -m socket --transparent -j DIVERT
# New connections to port 25 from the clients: to smtpsiftd's listener.
iptables -t mangle -A PREROUTING -i "$LAN" -p tcp --dport 25 \
         -j TPROXY --on-port "$PORT" --tproxy-mark "$MARK/$MARK"
# smtpsiftd takes the original destination from the accepted socket's local address and
# needs no conntrack. proxsmtpd 1.10 did read it from conntrack, which a namespace with only
# these rules does not keep; for a gateway shared with proxsmtpd add:
# iptables -t mangle -A PREROUTING -p tcp -m conntrack --ctstate NEW
