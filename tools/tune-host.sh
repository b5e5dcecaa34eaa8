#!/usr/bin/env bash
# Kernel and limit settings for a comet host holding up to about a million connections.
# The figures behind them are in bench/RESULTS.md ("Projection for 1,000,000 connections").
#
#   tools/tune-host.sh            show each setting: current value -> wanted value
#   tools/tune-host.sh --apply    apply them now (root), and print the ulimit to use
#   tools/tune-host.sh --persist  also write /etc/sysctl.d/90-starling.conf
#
# CONNS (default 1000000) scales the limits that depend on the connection count.
set -euo pipefail
mode=${1:-show}
CONNS=${CONNS:-1000000}
files=$((CONNS + CONNS / 10 + 65536))
# TCP memory in 4 KiB pages: an idle connection holds no buffers, but a burst to every
# connection queues about one small write each; allow 4 KiB per connection at the top.
tcp_pages_max=$((CONNS))

settings=(
  # Open files: one per connection plus headroom (the process limit is set by ulimit).
  "fs.file-max=$((files * 2))"
  "fs.nr_open=$files"
  # Accept queues: reconnect storms arrive as bursts of SYNs.
  "net.core.somaxconn=65535"
  "net.ipv4.tcp_max_syn_backlog=65535"
  "net.core.netdev_max_backlog=65535"
  # Small default socket buffers: an idle IM connection needs little; they grow on demand.
  "net.ipv4.tcp_rmem=4096 4096 6291456"
  "net.ipv4.tcp_wmem=4096 16384 4194304"
  "net.ipv4.tcp_mem=$((tcp_pages_max / 4)) $((tcp_pages_max / 2)) $tcp_pages_max"
  # Dead peers are found by the heartbeat deadline; keepalive is the backstop.
  "net.ipv4.tcp_keepalive_time=600"
  # Client side of load tests and reverse proxies in front of comet.
  "net.ipv4.ip_local_port_range=1024 65535"
  "net.ipv4.tcp_tw_reuse=1"
  "net.ipv4.tcp_fin_timeout=15"
)
# Only when connection tracking is loaded (a stateful firewall): it must not become the limit.
if [[ -e /proc/sys/net/netfilter/nf_conntrack_max ]]; then
  settings+=("net.netfilter.nf_conntrack_max=$((CONNS * 2))")
fi

key_path() { echo "/proc/sys/${1//.//}"; }

for s in "${settings[@]}"; do
  key=${s%%=*}
  want=${s#*=}
  path=$(key_path "$key")
  if [[ ! -e $path ]]; then
    echo "$key: not on this kernel, skipped"
    continue
  fi
  have=$(tr -s '\t ' ' ' <"$path")
  # Never lower a single-number limit the host already has higher.
  if [[ $have =~ ^[0-9]+$ && $want =~ ^[0-9]+$ && $have -ge $want && $key != *tcp_fin_timeout* && $key != *keepalive_time* ]]; then
    echo "$key: $have (already at least $want)"
    continue
  fi
  case $mode in
    show) echo "$key: $have -> $want" ;;
    --apply | --persist) sysctl -q -w "$key=$want" && echo "$key = $want" ;;
    *) echo "usage: $0 [--apply|--persist]" >&2; exit 2 ;;
  esac
done

if [[ $mode == --persist ]]; then
  printf '%s\n' "# Starling comet host (tools/tune-host.sh, CONNS=$CONNS)" "${settings[@]/=/ = }" \
    >/etc/sysctl.d/90-starling.conf
  echo "wrote /etc/sysctl.d/90-starling.conf"
fi

cat <<EOF

Per process: ulimit -n $files   (systemd: LimitNOFILE=$files)
Comet's share: about 0.5 KB of user space and 4-5 KB of kernel memory per idle connection
(bench/RESULTS.md); budget $((CONNS * 6 / 1024 / 1024)) GiB of RAM for $CONNS connections,
plus socket buffers for bursts.
EOF
