#!/bin/bash
# Views served over NBD by the nbdkit plugin (nbd-bridge/nbdkit_plugin.cpp)
# hold the source's bytes, and the same bytes as the mount's view files:
#  - every format pulled from nbd+unix with qemu-img convert compares
#    identical to the source (qemu-img compare -f raw -F FMT), for the odd
#    fixture (every format, the VMDK flat pair's extent through file=) and
#    the sparse ext4 disk (raw, vhd, vhdx, vmdk, qcow2, vdi, the flat extent);
#  - qemu-img compare reads every dynamic format straight off the export
#    (the format driver over qemu's NBD client);
#  - nbdcopy of the raw export equals the source (also with direct=true);
#  - the bytes pulled over NBD are, byte for byte, the bytes of the same view
#    file in a p2vfsd mount;
#  - nbdinfo --map: the raw export has exactly the holes between the source
#    file's extents (filefrag), and a dynamic view (vmdk) holds the
#    source's data and its metadata as data and the rest as holes;
#  - nbdkit started the usual way (forking into the background, --pidfile)
#    serves the same bytes as in the foreground, from a local source and
#    from an NBD source (whose I/O threads a fork would leave behind);
#  - a read that fails in the source fails the NBD read with EIO, and nbdkit
#    logs the view's offset;
#  - a bad configuration (no source, unknown format, unknown option key, bad
#    option value, no such file, missing source file, unusable cache
#    directory) stops nbdkit before it serves, with a message naming it.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd nbdkit qemu-img qemu-io nbdcopy nbdinfo cmp perl timeout
[[ -n ${P2VFS_NBDKIT_PLUGIN:-} ]] ||
    skip "P2VFS_NBDKIT_PLUGIN is not set (the plugin is built only where nbdkit-plugin.h is installed)"
[[ -f $P2VFS_NBDKIT_PLUGIN ]] || fail "P2VFS_NBDKIT_PLUGIN=$P2VFS_NBDKIT_PLUGIN is not a file"
PLUGIN=$P2VFS_NBDKIT_PLUGIN

# A plugin built with AddressSanitizer (P2VFS_SANITIZE) runs in an nbdkit
# that is not: the ASan runtime must be loaded before anything else, so it is
# preloaded, into nbdkit only, and libstdc++ with it: nbdkit is C, and ASan
# resolves the C++ functions it intercepts (__cxa_throw) when it starts, so
# without libstdc++ loaded by then the first exception the plugin throws
# aborts nbdkit ("real___cxa_throw != 0"). Leaks are checked at nbdkit's
# exit, except nbdkit's own (it exits holding a few allocations made in its
# main): the suppression names nbdkit's executable, and allocation stacks
# are cut to the allocating function, so that it matches what nbdkit's code
# allocated itself and not what the plugin allocated in a call from nbdkit.
NBDKIT=(nbdkit)
asan_runtime=$(ldd "$PLUGIN" | awk '$1 ~ /^libasan\.so/ { print $3 }')
cxx_runtime=$(ldd "$PLUGIN" | awk '$1 ~ /^libstdc\+\+\.so/ { print $3 }')
case ${P2VFS_SANITIZE:-OFF} in
ON | on | 1 | TRUE | true | YES | yes)
    [[ -n $asan_runtime ]] || fail "P2VFS_SANITIZE=${P2VFS_SANITIZE}, but $PLUGIN links no ASan runtime"
    ;;
esac
if [[ -n $asan_runtime ]]; then
    printf 'leak:%s\n' "$(readlink -f "$(command -v nbdkit)")" >"$T/lsan.supp"
    NBDKIT=(env "LD_PRELOAD=$asan_runtime $cxx_runtime"
        "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}malloc_context_size=2"
        "LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$T/lsan.supp" nbdkit)
    log "sanitizer build: nbdkit runs with LD_PRELOAD=$asan_runtime $cxx_runtime"
fi

# With the ASan runtime preloaded, a process that has loaded gnutls (nbdkit
# does) and called strerror() can hang at exit: p11-kit's destructor waits
# forever for glibc's locale lock (Debian 12: glibc 2.36, GCC 12's libasan,
# p11-kit 0.24; a ten-line C program with gnutls_global_init() and
# strerror() does the same). nbdkit's own file plugin shows whether this one
# does; if so, a refused start that printed its error and then hung counts
# as refused (below).
EXIT_MAY_HANG=0
if [[ -n $asan_runtime ]]; then
    RC=0
    timeout -k 1 5 "${NBDKIT[@]}" -f --readonly --unix "$T/probe.sock" file "$T/no-such-file" \
        >/dev/null 2>&1 </dev/null || RC=$?
    if [[ $RC -eq 124 || $RC -eq 137 ]]; then
        EXIT_MAY_HANG=1
        log "nbdkit with the ASan runtime preloaded hangs at exit after an error naming errno"
    fi
fi

declare -A SRC=()
SRC[odd]=$(fixture odd)
SRC[sparse]=$(fixture sparse-ext4)

start_daemon "$T/mnt" --source odd="${SRC[odd]}" --source sparse="${SRC[sparse]}"

# ---------------------------------------------------------------- helpers

declare -A NBDKIT_LOG_OF=()

# serve NAME PLUGIN-ARGS...: nbdkit in the foreground with the plugin on the
# socket $T/NAME.sock, read-only; waits until it has written its pid file
# (after get_ready; connections made before after_fork wait in the socket's
# backlog). Sets SOCK, URI, NBDKIT_PID; stopped at exit.
serve() {
    local name=$1
    shift
    SOCK=$T/$name.sock
    URI="nbd+unix:///?socket=$SOCK"
    bg_tracked "${NBDKIT[@]}" -f --readonly --unix "$SOCK" --pidfile "$T/$name.pid" \
        "$PLUGIN" "$@"
    NBDKIT_PID=$BG_PID
    NBDKIT_LOG_OF[$NBDKIT_PID]=${_LOGS[-1]}
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -s $T/$name.pid ]] && return 0
        if ! kill -0 "$NBDKIT_PID" 2>/dev/null; then
            cat "${NBDKIT_LOG_OF[$NBDKIT_PID]}" >&2
            fail "nbdkit exited before serving: $PLUGIN $*"
        fi
        sleep 0.1
    done
    fail "nbdkit wrote no pid file within 30 s: $PLUGIN $*"
}

# stop_nbdkit: stops the last nbdkit started by serve; it must exit with
# status 0 (a sanitizer error at unload would not).
stop_nbdkit() {
    local pid=$NBDKIT_PID rc=0
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    _REAPED[$pid]=1
    if [[ $rc -ne 0 ]]; then
        cat "${NBDKIT_LOG_OF[$pid]}" >&2
        fail "nbdkit exited with status $rc after SIGTERM (expected 0)"
    fi
}

# pull URI OUT: the export's bytes into the file OUT.
pull() {
    rm -f "$2"
    qemu-img convert -f raw -O raw "$1" "$2" || fail "qemu-img convert from $1 failed"
}

# same_disk WHAT SRC FMT FILE: qemu-img compare says the virtual disk in FILE
# (qemu format FMT) holds the bytes of SRC.
same_disk() {
    run_rc qemu-img compare -f raw -F "$3" "$2" "$4"
    [[ $RC -eq 0 ]] || fail "$1: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
    assert_eq "Images are identical." "$(cat "$T/run.out")" "$1: qemu-img compare output"
}

# same_bytes WHAT A B: A and B have the same size and bytes. cmp reads both
# whole, which for a 4 GiB sparse file takes seconds of reading zeros; files
# that large are compared with qemu-img as raw (equal bytes, holes and zeros
# alike) after their sizes.
same_bytes() {
    local a b
    a=$(stat -c %s "$2")
    b=$(stat -c %s "$3")
    assert_eq "$a" "$b" "$1: size"
    if ((a <= 512 << 20)); then
        cmp "$2" "$3" || fail "$1: $2 and $3 differ"
    else
        same_disk "$1" "$2" raw "$3"
    fi
}

# same_pulled_bytes WHAT FILE PULLED URI: the export at URI has FILE's size,
# and PULLED (what qemu-img convert made of it: qemu counts whole sectors,
# so it rounds the size up to 512 bytes) starts with FILE's bytes.
same_pulled_bytes() {
    local size
    size=$(stat -c %s "$2")
    assert_eq "$size" "$(nbdinfo --size "$4")" "$1: export size"
    assert_eq "$(round_up "$size" 512)" "$(stat -c %s "$3")" "$1: size of the pulled file"
    if ((size <= 512 << 20)); then
        cmp -n "$size" "$2" "$3" || fail "$1: $2 and $3 differ"
    else
        same_disk "$1" "$2" raw "$3"
    fi
}

# map_bytes TYPE: the bytes of extents of nbdinfo --map type TYPE (0 data,
# 3 hole,zero) in the map on stdin.
map_bytes() {
    perl -ane 'BEGIN { $type = shift } $n += $F[1] if $F[2] == $type;
               END { print $n + 0, "\n" }' "$1"
}

# ---------------------------------------------------------------- every format

# NAME FORMAT FILE-OPTION MOUNT-FILE QEMU-FORMAT
EXPORTS=(
    "raw raw - disk.raw raw"
    "vhd vhd - disk.vhd vpc"
    "vhd-fixed vhd-fixed - disk-fixed.vhd vpc"
    "vhdx vhdx - disk.vhdx vhdx"
    "vhdx-fixed vhdx-fixed - disk-fixed.vhdx vhdx"
    "vmdk vmdk - disk.vmdk vmdk"
    "vmdk-flat-descriptor vmdk-flat - disk-esx.vmdk -"
    "vmdk-flat-extent vmdk-flat disk-esx-flat.vmdk disk-esx-flat.vmdk raw"
    "vmdk-stream vmdk-stream - disk-stream.vmdk vmdk"
    "qcow2 qcow2 - disk.qcow2 qcow2"
    "vdi vdi - disk.vdi vdi"
)
# The formats pulled from the 4 GiB disk as well (the fixed ones and the
# stream are the same code paths at a larger size; pulling them would cost
# seconds each).
SPARSE_EXPORTS=" raw vhd vhdx vmdk qcow2 vdi vmdk-flat-extent "

for src_name in odd sparse; do
    src=${SRC[$src_name]}
    for e in "${EXPORTS[@]}"; do
        read -r name format file mount_file qfmt <<<"$e"
        if [[ $src_name == sparse && $SPARSE_EXPORTS != *" $name "* ]]; then
            continue
        fi
        what="$src_name/$name"
        log "checking $what"
        args=(source="$src" format="$format")
        [[ $file == - ]] || args+=(file="$file")
        serve "$src_name-$name" "${args[@]}"
        out=$T/out.$name
        pull "$URI" "$out"
        # The view file of the mount, byte for byte. (Opening it first
        # prepares the mount's stream VMDK, which shows size 0 until then.)
        : <"$T/mnt/$src_name/$mount_file"
        same_pulled_bytes "$what: NBD export vs mount" "$T/mnt/$src_name/$mount_file" "$out" "$URI"
        if [[ $qfmt != - ]]; then
            same_disk "$what: pulled over NBD" "$src" "$qfmt" "$out"
        fi
        # Dynamic formats straight off the export: qemu's format driver over its
        # NBD client.
        case $qfmt in
        vpc | vhdx | vmdk | qcow2 | vdi)
            run_rc qemu-img compare --image-opts \
                "driver=raw,file.driver=file,file.filename=$src" \
                "driver=$qfmt,file.driver=nbd,file.server.type=unix,file.server.path=$SOCK"
            [[ $RC -eq 0 ]] ||
                fail "$what: qemu-img compare over NBD exited $RC: $(cat "$T/run.out" "$T/run.err")"
            assert_eq "Images are identical." "$(cat "$T/run.out")" \
                "$what: qemu-img compare over NBD output"
            ;;
        esac
        rm -f "$out"
        stop_nbdkit
    done
done

# ---------------------------------------------------------------- nbdcopy

for src_name in odd sparse; do
    src=${SRC[$src_name]}
    serve "nbdcopy-$src_name" source="$src"
    nbdcopy "$URI" "$T/copy.raw" || fail "$src_name: nbdcopy from $URI failed"
    stop_nbdkit
    same_bytes "$src_name: nbdcopy of the raw export" "$src" "$T/copy.raw"
    rm -f "$T/copy.raw"
done
# The same through O_DIRECT reads of the source (unaligned size and data).
serve nbdcopy-odd-direct source="${SRC[odd]}" direct=true
nbdcopy "$URI" "$T/copy.raw" || fail "odd, direct=true: nbdcopy from $URI failed"
stop_nbdkit
same_bytes "odd, direct=true: nbdcopy of the raw export" "${SRC[odd]}" "$T/copy.raw"
rm -f "$T/copy.raw"

# ---------------------------------------------------------------- allocation

# The raw export has its holes exactly where the source file has no
# extents, as FIEMAP lists them (filefrag -v): preallocated, unwritten
# extents (the ext4 journal here) are allocated, reported as zero. (nbdkit's
# file plugin is no reference for this: ext4 answers SEEK_DATA over unwritten
# extents from the page cache, so its map changes with what is cached.)
need_cmd filefrag
src=${SRC[sparse]}
serve map-raw source="$src"
nbdinfo --map "$URI" >"$T/map.raw" || fail "nbdinfo --map of the raw export failed"
stop_nbdkit
filefrag -v -b1 "$src" >"$T/filefrag.txt" || fail "filefrag -v of $src failed"
# The extents as "start length allocated" runs with the holes between them.
perl -ne '
    BEGIN { $end = 0 }
    if (/^File size of .* is (\d+)/) { $size = $1; next }
    next unless /^\s*\d+:\s+(\d+)\.\.\s*(\d+):/;
    my ($a, $b) = ($1, $2 + 1);
    if ($a > $end) {
        print "$ls $ll allocated\n" if defined $ls;
        undef $ls;
        print "$end " . ($a - $end) . " hole\n";
    }
    if (defined $ls) { $ll += $b - $a } else { ($ls, $ll) = ($a, $b - $a) }
    $end = $b;
    END { print "$ls $ll allocated\n" if defined $ls; print "$end " . ($size - $end) . " hole\n" if $size > $end }
' "$T/filefrag.txt" | perl -ane '
    if (defined $last && $F[2] eq $last) { $len += $F[1]; next }
    print "$start $len $last\n" if defined $last;
    ($start, $len, $last) = @F;
    END { print "$start $len $last\n" }' >"$T/map.fiemap"
# holes_of MAP: the nbdinfo map as runs of "hole" and "allocated", merged.
holes_of() {
    perl -ane '
        my $k = ($F[2] & 1) ? "hole" : "allocated";
        if (defined $last && $k eq $last) { $len += $F[1]; next }
        print "$start $len $last\n" if defined $last;
        ($start, $len, $last) = ($F[0], $F[1], $k);
        END { print "$start $len $last\n" }' "$1"
}
diff -u "$T/map.fiemap" <(holes_of "$T/map.raw") >&2 ||
    fail "holes of the raw export differ from the source file's extents (filefrag)"
src_data=$(map_bytes 0 <"$T/map.raw")
src_holes=$(map_bytes 3 <"$T/map.raw")
assert_lt 0 "$src_holes" "hole bytes in the raw export's map"

# A dynamic view: its grains hold the source's data, the source's holes
# inside them stay holes, and what else is data is metadata (header,
# descriptor, grain directories and tables: under 1 MiB for 4 GiB).
serve map-vmdk source="$src" format=vmdk
nbdinfo --map "$URI" >"$T/map.vmdk" || fail "nbdinfo --map of the vmdk export failed"
size=$(nbdinfo --size "$URI")
stop_nbdkit
vmdk_data=$(map_bytes 0 <"$T/map.vmdk")
vmdk_zero=$(map_bytes 2 <"$T/map.vmdk")
vmdk_holes=$(map_bytes 3 <"$T/map.vmdk")
log "source: $src_data data, $src_holes holes; vmdk view: $vmdk_data data, $vmdk_zero zero, $vmdk_holes holes of $size"
assert_eq "$size" $((vmdk_data + vmdk_zero + vmdk_holes)) "vmdk export: data + zero + holes"
assert_le "$src_data" "$vmdk_data" "vmdk export: data bytes hold the source's data"
assert_le "$vmdk_data" $((src_data + (1 << 20))) "vmdk export: data bytes beyond the source's (metadata)"
assert_lt 0 "$vmdk_holes" "vmdk export: hole bytes"

# ---------------------------------------------------------------- forking

# As nbdkit is usually run: into the background, with a pid file. The
# device that serves is made after the fork (nbdkit_plugin.cpp says why).

# serve_forked NAME PLUGIN-ARGS...: like serve, but nbdkit forks; its parent
# must exit 0 (get_ready passed). Sets SOCK, URI, FORKED_PID, FORKED_LOG.
serve_forked() {
    local name=$1 rc=0
    shift
    SOCK=$T/$name.sock
    URI="nbd+unix:///?socket=$SOCK"
    FORKED_LOG=$T/$name.log
    _LOGS+=("$FORKED_LOG")
    "${NBDKIT[@]}" --readonly --log=stderr --unix "$SOCK" --pidfile "$T/$name.pid" \
        "$PLUGIN" "$@" 2>"$FORKED_LOG" || rc=$?
    [[ $rc -eq 0 ]] || fail "nbdkit (forking) exited with status $rc: $PLUGIN $*"
    wait_for 30 test -s "$T/$name.pid" || fail "nbdkit (forking) wrote no pid file: $PLUGIN $*"
    FORKED_PID=$(cat "$T/$name.pid")
    push_cleanup _kill_pid "$FORKED_PID"
}

# stop_forked: SIGTERM; it must exit without a sanitizer report.
stop_forked() {
    kill -TERM "$FORKED_PID"
    wait_for 10 bash -c "! kill -0 $FORKED_PID 2>/dev/null" ||
        fail "forked nbdkit $FORKED_PID did not exit on SIGTERM"
    assert_file_lacks "$FORKED_LOG" "Sanitizer|runtime error" "forked nbdkit's log"
}

serve_forked forked-vdi source="${SRC[odd]}" format=vdi
pull "$URI" "$T/out.forked.vdi"
same_pulled_bytes "odd/vdi from a forked nbdkit vs mount" "$T/mnt/odd/disk.vdi" \
    "$T/out.forked.vdi" "$URI"
stop_forked

# An NBD source runs I/O threads, which the fork would have left behind:
# the view of a disk that nbdkit's file plugin serves, through a forked
# nbdkit with this plugin. (Its identifiers come from the NBD source's
# identity, so it is compared with the disk, not with the mount's file.)
bg_tracked nbdkit -f --readonly --unix "$T/upstream.sock" file "${SRC[odd]}"
wait_for 10 test -S "$T/upstream.sock" || fail "nbdkit (file plugin) did not create its socket"
serve_forked forked-nbd source="nbd+unix:///?socket=$T/upstream.sock" format=vhdx
# (Served by a device whose threads are gone, reads would wait forever.)
run_rc timeout 60 qemu-img compare --image-opts \
    "driver=raw,file.driver=file,file.filename=${SRC[odd]}" \
    "driver=vhdx,file.driver=nbd,file.server.type=unix,file.server.path=$SOCK"
[[ $RC -eq 0 ]] ||
    fail "vhdx of an NBD source, forked: qemu-img compare exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq "Images are identical." "$(cat "$T/run.out")" "vhdx of an NBD source, forked: qemu-img compare"
stop_forked

# ---------------------------------------------------------------- read errors

# The source shrinks under the export: reads past its new end fail in the
# source. The client sees EIO; nbdkit's log names the view, the offset the
# client asked for, and the source's own error.
cp --sparse=always "${SRC[odd]}" "$T/shrinking.img"
serve shrink source="$T/shrinking.img" format=raw
truncate -s 1M "$T/shrinking.img"
run_rc qemu-io -r -f raw -c "read 0x800000 65536" "$URI"
assert_file_contains "$T/run.out" "read failed: Input/output error" "qemu-io read past the shrunk source"
log_file=${NBDKIT_LOG_OF[$NBDKIT_PID]}
assert_file_contains "$log_file" \
    "error: disk\.raw of $T/shrinking\.img: read of 65536 bytes at 0x800000 failed: .*0x800000" \
    "nbdkit's log of the failed read"
# A read before the new end still works: one bad region is not a dead export.
qemu-img convert -O raw --image-opts \
    "driver=raw,offset=0,size=1048576,file.driver=nbd,file.server.type=unix,file.server.path=$SOCK" \
    "$T/head.raw" || fail "reading the first MiB after a failed read failed"
cmp "$T/head.raw" <(head -c 1048576 "${SRC[odd]}") ||
    fail "the export's first MiB differs from the source after a failed read"
stop_nbdkit

# ---------------------------------------------------------------- bad configuration

# refused TEXT PLUGIN-ARGS...: nbdkit exits with status 1 before serving,
# and its stderr has an error line containing TEXT.
refused() {
    local text=$1
    shift
    RC=0
    timeout -k 1 "$((EXIT_MAY_HANG ? 5 : 30))" "${NBDKIT[@]}" -f --readonly --unix "$T/bad.sock" \
        "$PLUGIN" "$@" >"$T/run.out" 2>"$T/run.err" </dev/null || RC=$?
    if [[ $EXIT_MAY_HANG -eq 1 && ($RC -eq 124 || $RC -eq 137) ]] && grep -q "error: " "$T/run.err"; then
        log "nbdkit $*: hung at exit after its error (see above); taken as exit status 1"
        RC=1
    fi
    [[ $RC -eq 1 ]] || {
        cat "$T/run.err" >&2
        fail "nbdkit $*: expected a failed start (exit status 1), got exit status $RC"
    }
    assert_file_lacks "$T/run.err" "Sanitizer|runtime error" "nbdkit $*: stderr"
    grep -F -- "$text" "$T/run.err" | grep -q "error: " || {
        cat "$T/run.err" >&2
        fail "nbdkit $*: no error line on stderr contains '$text'"
    }
}

src=${SRC[odd]}
refused "source=SPEC is required" format=vmdk
refused "format=vmdx: no such format" source="$src" format=vmdx
refused "vmdk: unknown option 'adaptor'" source="$src" format=vmdk adaptor=lsilogic
refused "raw: unknown option 'round'" source="$src" round=mib
refused "option adapter=floppy: must be one of" source="$src" format=vmdk adapter=floppy
refused "no file named 'disk-flat.vmdk' (its files: disk-esx.vmdk, disk-esx-flat.vmdk)" \
    source="$src" format=vmdk-flat file=disk-flat.vmdk
refused "$T/missing.img: No such file or directory" source="$T/missing.img"
refused "direct=sometimes: expected true or false" source="$src" direct=sometimes
# A stream-optimized VMDK is prepared before serving: a cache directory it
# cannot use stops the start too.
: >"$T/not-a-dir"
refused "$T/not-a-dir/cache" source="$src" format=vmdk-stream cachedir="$T/not-a-dir/cache"

stop_daemon
