#!/usr/bin/env bash
# Runs Nchan as a loadgen peer: nchan.sh start PORT DIR [WORKERS] | nchan.sh stop DIR
# `start` runs nginx from DIR (config, pid file, temp files), waits until PORT answers,
# and prints the worker pids on one line (for --peer-pid). `stop` ends that nginx.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
case "${1:-}" in
start)
    port=$2 dir=$3 workers=${4:-2}
    mkdir -p "$dir/tmp"
    sed -e "s/@PORT@/$port/" -e "s/@WORKERS@/$workers/" "$here/nchan.conf" >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" 2>"$dir/error.log"
    i=0
    until [ -s "$dir/nginx.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "nchan did not start: $(cat "$dir/error.log")" >&2; exit 1; }
        sleep 0.1
    done
    master=$(cat "$dir/nginx.pid")
    pgrep -P "$master" | tr '\n' ' ' | sed 's/ $//'
    echo
    ;;
stop)
    dir=$2
    [ -s "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")"
    ;;
*)
    echo "usage: $0 start PORT DIR [WORKERS] | stop DIR" >&2
    exit 2
    ;;
esac
