# Shared by the run.sh scripts of bench-results (sourced).

# Waits (at most 90 s) until fewer than 1000 TCP sockets are in TIME_WAIT: sockets of
# an earlier run expiring during a measurement shrink the kernel's Slab and distort the
# host-wide kernel figures.
wait_time_wait() {
    local tw
    for _ in $(seq 90); do
        tw=$(awk '/^TCP:/ {for (i = 1; i < NF; i++) if ($i == "tw") print $(i + 1)}' /proc/net/sockstat)
        [ "$tw" -lt 1000 ] && return 0
        sleep 1
    done
    echo "still $tw sockets in TIME_WAIT after 90 s; measuring anyway" >&2
}
