#!/usr/bin/env bash
# A "second host" for benchmarks on one machine: network namespace `whipbench` reached over a veth
# pair, so that a load generator (whip-load) or a benchmark sink runs there and the gateway sends
# to it the way it would send to another host.
#
# Why: on loopback the receiver's kernel work (softirq net_rx_action, GSO segmentation at the
# receiving socket, socket enqueue + wakeup) runs inside the *sender's* sendmsg and is charged to
# the gateway (no CONFIG_IRQ_TIME_ACCOUNTING here). veth without NAPI does the same (netif_rx,
# softirq on the way out of the syscall). With GRO on, veth can receive through NAPI, and with
# threaded NAPI (/sys/class/net/<dev>/threaded = 1) that poll runs in a kernel thread
# (napi/<dev>-<id>): the receive work is no longer in the gateway's syscall nor in its CPU time.
# Two more settings make that true for the gateway's packets:
# * rx-udp-gro-forwarding on: veth hands a packet to NAPI only if it may be GRO'd
#   (veth_skb_is_eligible_for_gro): with TSO on the sending device that means a locally sent
#   UDP skb *and* NETIF_F_GRO_UDP_FWD or GRO_FRAGLIST on the receiving one; otherwise it takes
#   netif_rx and the receive runs in the sender's softirq again. (UDP GRO-forwarding does not
#   merge datagrams for a local socket without UDP_GRO, so sockets still get single datagrams.)
# * a pfifo qdisc (veth is noqueue): with a qdisc, a full veth ring stops the queue and the
#   sender waits (backpressure, as with a NIC) instead of veth dropping the packet.
#
#   scripts/netns.sh up      create (or re-apply) namespace, veth pair, GRO, threaded NAPI
#   scripts/netns.sh down    remove the namespace (the veth pair goes with it)
#   scripts/netns.sh status  print the state
#   scripts/netns.sh check   send UDP GSO buffers host -> namespace, check they arrive whole
#
# Addresses: host side wb0 10.201.0.1/24, namespace side wb1 10.201.0.2/24, lo up in the namespace.
# Environment overrides: NETNS (whipbench), HOST_DEV (wb0), NS_DEV (wb1), HOST_IP (10.201.0.1),
# NS_IP (10.201.0.2). Installs ethtool (apt-get) when it is missing. Idempotent; needs root.
set -euo pipefail

NETNS=${NETNS:-whipbench}
HOST_DEV=${HOST_DEV:-wb0}
NS_DEV=${NS_DEV:-wb1}
HOST_IP=${HOST_IP:-10.201.0.1}
NS_IP=${NS_IP:-10.201.0.2}
PREFIX=24

say() { echo "netns.sh: $*"; }
in_ns() { ip netns exec "$NETNS" "$@"; }

ensure_ethtool() {
    if ! command -v ethtool >/dev/null 2>&1; then
        say "installing ethtool"
        DEBIAN_FRONTEND=noninteractive apt-get install -y ethtool >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y ethtool >/dev/null; }
    fi
}

# threaded NAPI + GRO on one end ($1 = "host" or "ns", $2 = device).
napi_threaded() {
    local where=$1 dev=$2 run=()
    [ "$where" = ns ] && run=(ip netns exec "$NETNS")
    "${run[@]}" ethtool -K "$dev" gro on rx-udp-gro-forwarding on >/dev/null
    local gro fwd
    gro=$("${run[@]}" ethtool -k "$dev" | awk '/^generic-receive-offload:/ {print $2}')
    fwd=$("${run[@]}" ethtool -k "$dev" | awk '/^rx-udp-gro-forwarding:/ {print $2}')
    [ "$gro" = on ] || { say "GRO on $dev did not turn on ($gro)"; exit 1; }
    [ "$fwd" = on ] || { say "rx-udp-gro-forwarding on $dev did not turn on ($fwd)"; exit 1; }
    "${run[@]}" tc qdisc replace dev "$dev" root pfifo limit 10000
    # /sys/class/net shows the devices of the namespace of whoever mounted /sys: `ip netns exec`
    # mounts a fresh sysfs for the namespace, so read and write it from there.
    "${run[@]}" sh -c "echo 1 > /sys/class/net/$dev/threaded"
    local threaded
    threaded=$("${run[@]}" cat "/sys/class/net/$dev/threaded")
    [ "$threaded" = 1 ] || { say "threaded NAPI on $dev reads $threaded, not 1"; exit 1; }
    say "$where $dev: gro=$gro rx-udp-gro-forwarding=$fwd threaded=$threaded qdisc=pfifo limit 10000"
}

up() {
    [ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }
    ensure_ethtool
    if ! ip netns list | awk '{print $1}' | grep -qx "$NETNS"; then
        ip netns add "$NETNS"
        say "created namespace $NETNS"
    fi
    if ! ip link show "$HOST_DEV" >/dev/null 2>&1; then
        # A half-created pair (the peer already in the namespace) would make `add` fail.
        in_ns ip link del "$NS_DEV" 2>/dev/null || true
        ip link add "$HOST_DEV" type veth peer name "$NS_DEV"
        ip link set "$NS_DEV" netns "$NETNS"
        say "created veth $HOST_DEV <-> $NETNS:$NS_DEV"
    fi
    ip addr replace "$HOST_IP/$PREFIX" dev "$HOST_DEV"
    ip link set "$HOST_DEV" up
    in_ns ip addr replace "$NS_IP/$PREFIX" dev "$NS_DEV"
    in_ns ip link set "$NS_DEV" up
    in_ns ip link set lo up
    say "addresses: $HOST_DEV $HOST_IP/$PREFIX, $NETNS:$NS_DEV $NS_IP/$PREFIX, $NETNS:lo up"

    napi_threaded host "$HOST_DEV"
    napi_threaded ns "$NS_DEV"

    # Socket buffer limits: the viewers ask for 2 MiB receive buffers and the benchmarks for
    # 8 MiB. On this kernel net.core.[rw]mem_max inside a namespace is a read-only view of the
    # host's; on a kernel where it is per namespace and writable, copy the host's value.
    local key host_v ns_v
    for key in net.core.rmem_max net.core.wmem_max; do
        host_v=$(sysctl -n "$key")
        ns_v=$(in_ns sysctl -n "$key" 2>/dev/null || echo '?')
        if [ "$ns_v" != "$host_v" ]; then
            if in_ns sysctl -qw "$key=$host_v" 2>/dev/null; then
                say "$NETNS $key: $ns_v -> $host_v (as the host)"
            else
                say "$NETNS $key = $ns_v (host $host_v), not writable here"
            fi
        else
            say "$NETNS $key = $ns_v (same as the host's)"
        fi
    done

    # veth's NAPI kthreads exist once the device is up with NAPI enabled (GRO on).
    local threads
    threads=$(ps -e -o comm= | grep -E "^napi/($HOST_DEV|$NS_DEV)-" | sort | tr '\n' ' ' || true)
    if [ -z "$threads" ]; then
        say "no napi/$HOST_DEV-* or napi/$NS_DEV-* kernel thread found"
        exit 1
    fi
    say "NAPI kernel threads: $threads"
    check
    say "up"
}

# UDP GSO across the pair: the host sends 100 GSO buffers of 32 x 1200 bytes to a socket in the
# namespace. Intact GSO means one skb per buffer on the veth (HOST_DEV tx_packets +100, not
# +3200) and 3200 datagrams of 1200 bytes at the receiver (segmented on its side). NAPI: the
# namespace end's rx_queue_0_xdp_packets (ethtool -S: packets its NAPI poll took from the veth
# ring; netif_rx deliveries are not counted there) must grow by the 100 buffers too.
# Also the reachability test (no ping here).
check() {
    python3 - "$NETNS" "$NS_IP" "$HOST_DEV" "$NS_DEV" <<'PY'
import socket, struct, subprocess, sys, time
ns, ns_ip, host_dev, ns_dev = sys.argv[1:5]
SENDS, SEG, N = 100, 1200, 32
def udp(in_ns):
    cmd = (["ip", "netns", "exec", ns] if in_ns else []) + ["cat", "/proc/net/snmp"]
    rows = [l.split() for l in subprocess.check_output(cmd, text=True).splitlines() if l.startswith("Udp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:])))
def tx_packets():
    return int(open(f"/sys/class/net/{host_dev}/statistics/tx_packets").read())
def napi_packets():
    out = subprocess.check_output(["ip", "netns", "exec", ns, "ethtool", "-S", ns_dev], text=True)
    return sum(int(l.split(":")[1]) for l in out.splitlines() if "rx_queue_" in l and l.strip().split(":")[0].endswith("_xdp_packets"))
rx = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("{ns_ip}", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(1.0)
n, sizes = 0, set()
try:
    while True:
        sizes.add(len(s.recv(65536)))
        n += 1
except socket.timeout:
    pass
print(n, ",".join(map(str, sorted(sizes))) or "-", flush=True)
"""], stdout=subprocess.PIPE, text=True)
port = int(rx.stdout.readline())
ns0, tx0, napi0 = udp(True), tx_packets(), napi_packets()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
buf = bytes(SEG * N)
for _ in range(SENDS):
    s.sendmsg([buf], [(socket.SOL_UDP, 103, struct.pack("H", SEG))], 0, (ns_ip, port))  # UDP_SEGMENT
    time.sleep(0.001)
got, sizes = rx.stdout.readline().split()
rx.wait()
ns1, tx1, napi1 = udp(True), tx_packets(), napi_packets()
skbs, ins, napi = tx1 - tx0, ns1["InDatagrams"] - ns0["InDatagrams"], napi1 - napi0
print(f"netns.sh: GSO check: {SENDS} sends of {N} x {SEG} B -> {host_dev} tx_packets +{skbs}, "
      f"{ns_dev} NAPI packets +{napi}, {ns} Udp InDatagrams +{ins}, receiver got {got} datagrams of {sizes} B")
ok = int(got) == SENDS * N and sizes == str(SEG) and skbs < SENDS * 2
print("netns.sh: GSO buffers cross the veth intact and are segmented at the receiver" if ok
      else "netns.sh: GSO check FAILED")
print(f"netns.sh: they went through {ns_dev}'s NAPI poll (threaded)" if napi >= SENDS
      else f"netns.sh: NAPI check FAILED: {ns_dev}'s NAPI took {napi} of {SENDS} (netif_rx path)")
sys.exit(0 if ok and napi >= SENDS else 1)
PY
}

down() {
    if ip netns list | awk '{print $1}' | grep -qx "$NETNS"; then
        ip netns del "$NETNS"
        say "removed namespace $NETNS (and $NS_DEV)"
    fi
    # Deleting the namespace destroys wb1 and with it its peer; wait for that, or remove it.
    for _ in $(seq 1 20); do
        ip link show "$HOST_DEV" >/dev/null 2>&1 || break
        sleep 0.1
    done
    if ip link show "$HOST_DEV" >/dev/null 2>&1; then
        ip link del "$HOST_DEV"
        say "removed $HOST_DEV"
    fi
    say "down"
}

status() {
    ip netns list | awk '{print $1}' | grep -qx "$NETNS" || { say "namespace $NETNS absent"; return 0; }
    ip -br addr show "$HOST_DEV" || true
    in_ns ip -br addr || true
    say "host $HOST_DEV threaded=$(cat "/sys/class/net/$HOST_DEV/threaded" 2>/dev/null || echo '?')"
    say "$NETNS $NS_DEV threaded=$(in_ns cat "/sys/class/net/$NS_DEV/threaded" 2>/dev/null || echo '?')"
    ps -e -o pid=,comm= | grep -E " napi/($HOST_DEV|$NS_DEV)-" || true
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
check) check ;;
*)
    echo "usage: $0 up|down|status|check" >&2
    exit 2
    ;;
esac
