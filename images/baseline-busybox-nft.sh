#!/bin/busybox sh
# PID 1 of the bench baseline: the by-hand NAT instance, typed as a script. The commands are
# the documented ones, run literally and unchecked, as a person would. busybox has no udev, so
# the interface keeps the kernel's name, eth0. Its lines go to the console with the guest's
# clock (/proc/uptime, CLOCK_BOOTTIME); `cargo xtask bench` reads those.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "baseline: $*"; }
up() { cut -d' ' -f1 /proc/uptime; }
log "start uptime=$(up)"

while read -r m; do
    case "$m" in /*) insmod "$m" ;; esac
done < /etc/init/modules.list
log "modules uptime=$(up)"

ip link set lo up
ip link set eth0 up
cat > /tmp/udhcpc.sh <<'SCRIPT'
#!/bin/busybox sh
case "$1" in
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
esac
SCRIPT
chmod 755 /tmp/udhcpc.sh
udhcpc -i eth0 -s /tmp/udhcpc.sh -O mtu
log "dhcp uptime=$(up)"

sysctl -w net.ipv4.ip_forward=1
# baseline.mode=forward (bench only): forwarding without NAT rules, the throughput control.
case " $(cat /proc/cmdline) " in
*" baseline.mode=forward "*) ;;
*)
    nft add table ipv4-masquerade &&
    nft add chain ipv4-masquerade prerouting '{ type nat hook prerouting priority -100 ; }' &&
    nft add chain ipv4-masquerade postrouting '{ type nat hook postrouting priority 100 ; }' &&
    nft add rule ipv4-masquerade postrouting oifname "eth0" masquerade ||
    log "error nft failed"
    ;;
esac
log "ready iface=eth0 uptime=$(up)"

rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
log "mem $(awk '/^(MemTotal|MemAvailable):/ { sub(":", "", $1); printf "%s_kb=%s ", $1, $2 }' /proc/meminfo)rss_kb_init=$(rss 1) rss_kb_udhcpc=$(rss "$(pidof udhcpc)")"
while :; do
    sleep 2
    log "health conntrack=$(cat /proc/sys/net/netfilter/nf_conntrack_count)/$(cat /proc/sys/net/netfilter/nf_conntrack_max) MemAvailable_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)"
done
