#!/bin/bash
# The read cache of an NBD source: a second read of the same source range
# costs no request to the server. Requests are counted on the server side,
# with nbdkit's log filter ("connection=N Read id=... offset=... count=...").
#
# The second read goes through another view file (disk-fixed.vhd, whose data
# area is the disk at the same offsets), so the kernel's page cache of the
# first file cannot answer it: it reaches the daemon, whose cache must. With
# --cache-size 0 the same second read does reach the server (the control,
# so this test can fail).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit cmp

src=$(fixture random)
MiB=$((1 << 20))

# reads LOG [SKIP]: the NBD read requests in LOG after its first SKIP lines
# that overlap the range both reads cover, 8-24 MiB. (Readahead may fetch
# past the range meanwhile; that is not a second read of it.)
reads() {
    tail -n +$((${2:-0} + 1)) "$1" | perl -ne '
        next unless /connection=\d+ Read id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)/;
        my ($o, $c) = (hex $1, hex $2);
        $n++ if $o < (24 << 20) && $o + $c > (8 << 20);
        END { print $n + 0 }'
}

# quiet LOG: waits until LOG has not grown for half a second (readahead
# done); prints its line count.
quiet() {
    local n m
    n=$(wc -l <"$1")
    while sleep 0.5; m=$(wc -l <"$1"); [[ $m -ne $n ]]; do n=$m; done
    echo "$n"
}

# range FILE: the 16 MiB at 8 MiB of FILE (the disk's bytes in both views).
range() {
    dd if="$1" bs=1M skip=8 count=16 status=none
}

check() { # CACHE-SIZE EXPECT-SECOND(zero|some)
    local log=$T/nbd-$1.log
    start_nbdkit "$T/c.sock" -r --filter=log file "$src" logfile="$log"
    start_daemon "$T/mnt" --cache-size "$1" --source c="$(nbd_unix_uri "$T/c.sock")"
    local lines first second
    lines=$(quiet "$log")
    cmp <(range "$T/mnt/c/disk.raw") <(range "$src") || fail "cache $1: disk.raw differs from the source"
    first=$(reads "$log" "$lines")
    log "cache $1: first read of 16 MiB: $first requests"
    assert_le 1 "$first" "cache $1: requests for the first read"
    lines=$(quiet "$log")
    cmp <(range "$T/mnt/c/disk-fixed.vhd") <(range "$src") ||
        fail "cache $1: disk-fixed.vhd differs from the source"
    quiet "$log" >/dev/null
    second=$(reads "$log" "$lines")
    log "cache $1: second read of the same range: $second requests"
    if [[ $2 == zero ]]; then
        assert_eq 0 "$second" "cache $1: requests for the second read of the same range"
    else
        assert_le 1 "$second" "cache $1: requests for the second read (control)"
    fi
    stop_daemon
    stop_pid "$NBDKIT_PID"
}

check 256M zero
check 0 some
