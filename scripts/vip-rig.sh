#!/usr/bin/env bash
# One address for a cluster, on one machine: gateways and relays in network namespaces behind a
# virtual IP that a real L4 load balancer spreads over the gateways by each flow's 4-tuple, for
# UDP and HTTP alike (so one client's HTTP and UDP usually land on different gateways).
#
# The balancer is the kernel's nftables in namespace vip-lb, stateless (raw prerouting, no
# conntrack): VIP → gateway by `jhash saddr . sport . dport` on the way in, gateway → VIP on the
# way out. Stateless on purpose: `rehash` moves live flows at once, as a load balancer that lost
# a backend or changed its table does (IPVS is not built into every kernel; this one is).
#
#   scripts/vip-rig.sh up [GATEWAYS=3] [RELAYS=2]  create the namespaces, links and balancer
#   scripts/vip-rig.sh down                        remove them
#   scripts/vip-rig.sh rehash SEED                 spread flows with another hash seed
#   scripts/vip-rig.sh pin N                       send every flow to gateway N (1-based)
#   scripts/vip-rig.sh drop N                      take gateway N out of the table (others share)
#   scripts/vip-rig.sh split H U                   TCP (HTTP) to gateway H, UDP to gateway U
#   scripts/vip-rig.sh status                      the balancer's table
#
# Addresses: the client is this (root) namespace, 10.210.1.2, which reaches only the VIP
# 10.210.0.1 (through vip-lb, 10.210.1.1); gateway i is 10.210.2.(10+i) in vip-g<i>, relay i
# 10.210.2.(20+i) in vip-r<i>, all on one bridge in vip-lb (10.210.2.1, their default route).
# Gateways listen on HTTP 8080 and UDP 8189 (the VIP's ports). Needs root and nft (installed
# by scripts/setup-netns.sh). Idempotent: `up` starts from `down`.
set -euo pipefail

VIP=10.210.0.1
HTTP_PORT=8080
UDP_PORT=8189
STATE=/run/vip-rig.gateways

say() { echo "vip-rig.sh: $*" >&2; }

down() {
    for ns in $(ip netns list 2>/dev/null | awk '/^vip-/ {print $1}'); do
        # Processes left in a namespace would keep its addresses busy for the next `up`.
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns"
    done
    ip link del vipc0 2>/dev/null || true
    ip route del "$VIP/32" 2>/dev/null || true
    ip route del unreachable 10.210.2.0/24 2>/dev/null || true
    rm -f "$STATE"
}

# The balancer's table: `$1`, the rule(s) that send flows to the VIP to a gateway, between the
# rules every table has (no connection tracking; replies from the gateways' VIP ports leave as
# the VIP).
table() {
    ip netns exec vip-lb nft -f - <<NFT
flush ruleset
table ip vip {
    chain raw_pre {
        type filter hook prerouting priority raw; policy accept;
        ip daddr { $VIP, 10.210.1.0/24 } notrack
        $1
        ip saddr 10.210.2.0/24 ip daddr 10.210.1.0/24 th sport { $HTTP_PORT, $UDP_PORT } ip saddr set $VIP
    }
}
NFT
}

# Flows to the VIP go to the gateways listed ("10.210.2.11 ..."), by hash of the 4-tuple.
balance() {
    local seed=$1
    shift
    local n=$# map="" i=0
    for ip in "$@"; do
        map+="${map:+, }$i : $ip"
        i=$((i + 1))
    done
    table "ip daddr $VIP meta l4proto { tcp, udp } ip daddr set jhash ip saddr . th sport . th dport mod $n seed $seed map { $map }"
}

# HTTP (and ICE-TCP) to gateway $1, UDP to gateway $2: the case a 4-tuple hash makes common.
split() {
    table "ip daddr $VIP meta l4proto tcp ip daddr set 10.210.2.$((10 + $1))
        ip daddr $VIP meta l4proto udp ip daddr set 10.210.2.$((10 + $2))"
}

gateway_ips() {
    local n
    n=$(cat "$STATE")
    for i in $(seq 1 "$n"); do echo "10.210.2.$((10 + i))"; done
}

up() {
    local gateways=${1:-3} relays=${2:-2}
    down
    ip netns add vip-lb
    ip -n vip-lb link set lo up
    ip netns exec vip-lb sysctl -qw net.ipv4.ip_forward=1
    ip link add vipc0 type veth peer name vipc1
    ip link set vipc1 netns vip-lb
    ip addr add 10.210.1.2/24 dev vipc0
    ip link set vipc0 up
    ip route add "$VIP/32" via 10.210.1.1
    # The gateways' and relays' own addresses stay out of reach from here: a client that tried
    # one (a stray candidate) must fail, not leave through this host's default route.
    ip route add unreachable 10.210.2.0/24
    ip -n vip-lb addr add 10.210.1.1/24 dev vipc1
    ip -n vip-lb link set vipc1 up
    ip -n vip-lb link add br0 type bridge
    ip -n vip-lb addr add 10.210.2.1/24 dev br0
    ip -n vip-lb link set br0 up
    host() {
        local ns=$1 ip=$2 dev=$3
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip link add "$dev" type veth peer name eth0 netns "$ns"
        ip link set "$dev" netns vip-lb
        ip -n vip-lb link set "$dev" master br0
        ip -n vip-lb link set "$dev" up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via 10.210.2.1
    }
    for i in $(seq 1 "$gateways"); do host "vip-g$i" "10.210.2.$((10 + i))" "vipg$i"; done
    for i in $(seq 1 "$relays"); do host "vip-r$i" "10.210.2.$((20 + i))" "vipr$i"; done
    echo "$gateways" >"$STATE"
    # shellcheck disable=SC2046
    balance 1 $(gateway_ips)
    say "up: $gateways gateways, $relays relays behind $VIP"
}

case "${1:-}" in
up) up "${2:-3}" "${3:-2}" ;;
down) down ;;
rehash)
    # shellcheck disable=SC2046
    balance "${2:?seed}" $(gateway_ips)
    ;;
pin) balance 1 "10.210.2.$((10 + ${2:?gateway}))" ;;
drop)
    # shellcheck disable=SC2046
    balance 1 $(gateway_ips | grep -vx "10.210.2.$((10 + ${2:?gateway}))")
    ;;
split) split "${2:?http gateway}" "${3:?udp gateway}" ;;
status) ip netns exec vip-lb nft list ruleset ;;
*)
    sed -n '2,22p' "$0"
    exit 2
    ;;
esac
