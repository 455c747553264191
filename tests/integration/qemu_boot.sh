# shellcheck shell=bash
# Boots a disk under qemu (software emulation) and tells whether the guest
# came up: the Debian 12 fixture (debian_image.sh) prints a line with
# P2VFS-BOOT-MARKER on its serial port once its file systems are mounted,
# then powers off.
#
#   source tests/integration/qemu_boot.sh
#   rc=0; QEMU_BOOT_BUS=virtio qemu_boot DISK FORMAT LOG TIMEOUT [QEMU-ARGS...] || rc=$?
#
#   DISK      the disk (a file: an image, or a view in a p2vfs mount); never
#             written: qemu writes to a throwaway qcow2 overlay backed by it
#   FORMAT    qemu's name for its format: raw, vpc, vhdx, vmdk, qcow2, vdi
#             (given, never probed: a fixed VHD probes as raw)
#   LOG       the guest's serial console is written here
#   TIMEOUT   seconds before giving up
#   QEMU-ARGS more arguments for qemu-system-x86_64
#
# Returns
#   0  the marker appeared (QEMU_BOOT_MARKER holds its line)
#   1  the boot failed: a known failure on the console (initramfs "ALERT!",
#      "Gave up waiting for root", a kernel panic, GRUB rescue or an error
#      before its menu, systemd emergency mode), or qemu exited without the
#      marker; QEMU_BOOT_FAILURE says which
#   2  TIMEOUT passed with neither
#   3  qemu could not be started (no qemu, no overlay)
# qemu is always stopped before it returns; QEMU_BOOT_SECONDS holds the time
# from start to the verdict. Call it as `qemu_boot ... || rc=$?` under set -e.
# If the caller exits while a boot runs (a signal, a test's timeout), its
# exit trap must stop qemu: tests that use lib.sh get that through its
# cleanup stack (push_cleanup); other callers call qemu_boot_cleanup there.
#
# Settings (variables):
#   QEMU_BOOT_BUS   the disk's controller: ide (default), ahci, virtio
#                   (virtio-blk), scsi (virtio-scsi)
#   QEMU_BOOT_MEM   MiB of guest memory (default 1024)
#   QEMU_BOOT_QUIET 1: no progress lines on stderr
#
# Speed: with TCG on 2 cores the fixture reaches its marker in 20-30 s. A
# guest that cannot find its root disk fails in about a minute (Debian's
# initramfs waits ROOTDELAY, 30 s, for the root device, after waiting as
# long for the resume device). Only the kernel command line on the disk
# decides this; the harness passes nothing to the kernel.
#
# Needs qemu-system-x86_64 (qemu-system-x86) and qemu-img (qemu-utils).

# Fixed lines that end a boot as failed (grep -E, on the serial console).
QEMU_BOOT_FAILURES='ALERT!|Gave up waiting for root|Kernel panic|grub rescue>|error: (no such partition|unknown filesystem|file .* not found|disk .* not found)|You are in emergency mode|Give root password for maintenance|Cannot open access to console'
QEMU_BOOT_MARKER_TEXT=P2VFS-BOOT-MARKER

_qb_say() {
    [[ ${QEMU_BOOT_QUIET:-0} == 1 ]] || echo "qemu_boot: $*" >&2
}

# The -drive/-device arguments of a disk on BUS, in _QB_DRIVE.
# shellcheck disable=SC2054 # commas inside qemu's option values
_qb_drive_args() { # BUS OVERLAY
    local bus=$1 file=$2
    case $bus in
    ide) _QB_DRIVE=(-drive "file=$file,format=qcow2,if=ide,index=0,media=disk") ;;
    virtio) _QB_DRIVE=(-drive "file=$file,format=qcow2,if=virtio") ;;
    ahci)
        _QB_DRIVE=(-device ahci,id=ahci0 -drive "file=$file,format=qcow2,if=none,id=disk0"
            -device ide-hd,drive=disk0,bus=ahci0.0,bootindex=0)
        ;;
    scsi)
        _QB_DRIVE=(-device virtio-scsi-pci,id=scsi0 -drive "file=$file,format=qcow2,if=none,id=disk0"
            -device scsi-hd,drive=disk0,bus=scsi0.0,bootindex=0)
        ;;
    *) return 1 ;;
    esac
}

_QB_ACTIVE_PID=""
_QB_ACTIVE_TMP=""
_QB_REGISTERED=no

# Stops the qemu of a boot in progress and removes its overlay; nothing
# when no boot runs. The overlay goes before the final wait: in an exit trap
# run for a signal, bash ends the shell inside `wait`.
qemu_boot_cleanup() {
    local pid=$_QB_ACTIVE_PID tmp=$_QB_ACTIVE_TMP
    _QB_ACTIVE_PID="" _QB_ACTIVE_TMP=""
    [[ -n $pid ]] && _qb_kill "$pid"
    [[ -n $tmp ]] && rm -rf "$tmp"
    [[ -n $pid ]] && wait "$pid" 2>/dev/null
    return 0
}

# PID runs (exited but not yet reaped counts as gone).
_qb_alive() { # PID
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [[ ${st%% *} != Z ]]
}

# TERM, up to 5 s for qemu to go, then KILL (it is not reaped here).
_qb_kill() { # PID
    local pid=$1 i
    _qb_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        _qb_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    return 0
}

qemu_boot() {
    if (($# < 4)); then
        echo "usage: qemu_boot DISK FORMAT LOG TIMEOUT [QEMU-ARGS...]" >&2
        return 3
    fi
    local disk=$1 format=$2 log=$3 timeout=$4
    shift 4
    local bus=${QEMU_BOOT_BUS:-ide} mem=${QEMU_BOOT_MEM:-1024}
    local tmp abs pid start now line verdict=2 qrc
    QEMU_BOOT_MARKER=
    QEMU_BOOT_FAILURE=
    QEMU_BOOT_SECONDS=

    if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
        echo "qemu_boot: needs qemu-system-x86_64 (qemu-system-x86) and qemu-img (qemu-utils)" >&2
        return 3
    fi
    [[ $timeout =~ ^[1-9][0-9]*$ ]] || { echo "qemu_boot: TIMEOUT must be a positive number of seconds, not '$timeout'" >&2; return 3; }
    [[ -f $disk ]] || { echo "qemu_boot: no disk file $disk" >&2; return 3; }
    abs=$(realpath "$disk") || return 3
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/qemu_boot.XXXXXX") || return 3
    if [[ $_QB_REGISTERED == no ]] && declare -F push_cleanup >/dev/null; then
        push_cleanup qemu_boot_cleanup
        _QB_REGISTERED=yes
    fi
    if ! qemu-img create -q -f qcow2 -b "$abs" -F "$format" "$tmp/overlay.qcow2" >"$tmp/qemu-img.err" 2>&1; then
        echo "qemu_boot: cannot make an overlay over $disk as $format: $(cat "$tmp/qemu-img.err")" >&2
        rm -rf "$tmp"
        return 3
    fi
    if ! _qb_drive_args "$bus" "$tmp/overlay.qcow2"; then
        echo "qemu_boot: unknown QEMU_BOOT_BUS '$bus' (ide, ahci, virtio, scsi)" >&2
        rm -rf "$tmp"
        return 3
    fi

    : >"$log"
    _qb_say "booting $disk ($format) on $bus, up to $timeout s; console in $log"
    start=$(date +%s.%N)
    qemu-system-x86_64 -machine pc,accel=tcg -m "$mem" -nographic -monitor none \
        -serial "file:$log" -no-reboot -net none "${_QB_DRIVE[@]}" "$@" \
        </dev/null >"$tmp/qemu.out" 2>&1 &
    pid=$!
    _QB_ACTIVE_PID=$pid _QB_ACTIVE_TMP=$tmp

    while :; do
        sleep 0.5
        if line=$(grep -a -m1 -F "$QEMU_BOOT_MARKER_TEXT root=" "$log"); then
            QEMU_BOOT_MARKER=${line//$'\r'/}
            verdict=0
            break
        fi
        if line=$(grep -a -m1 -E "$QEMU_BOOT_FAILURES" "$log"); then
            # The initramfs names the missing device a few lines further on.
            sleep 1
            line=$(grep -a -m1 -F 'ALERT!' "$log") || line=$(grep -a -m1 -E "$QEMU_BOOT_FAILURES" "$log")
            QEMU_BOOT_FAILURE=${line//$'\r'/}
            verdict=1
            break
        fi
        if ! _qb_alive "$pid"; then
            qrc=0
            wait "$pid" || qrc=$?
            # A last look: the marker may have been written as qemu quit.
            if line=$(grep -a -m1 -F "$QEMU_BOOT_MARKER_TEXT root=" "$log"); then
                QEMU_BOOT_MARKER=${line//$'\r'/}
                verdict=0
            else
                QEMU_BOOT_FAILURE="qemu exited (status $qrc) without the marker: $(tail -n 3 "$tmp/qemu.out" | tr '\n' ' ')"
                verdict=1
            fi
            break
        fi
        now=$(date +%s.%N)
        if (($(awk -v a="$start" -v b="$now" -v t="$timeout" 'BEGIN { print (b - a >= t) }'))); then
            QEMU_BOOT_FAILURE="no marker after $timeout s"
            verdict=2
            break
        fi
    done
    QEMU_BOOT_SECONDS=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    # The marker unit powers the guest off by itself; give it a moment, so
    # the log ends cleanly, then stop qemu whatever it is doing.
    if ((verdict == 0)); then
        for ((qrc = 0; qrc < 20; qrc++)); do _qb_alive "$pid" || break; sleep 0.25; done
    fi
    qemu_boot_cleanup
    case $verdict in
    0) _qb_say "booted in $QEMU_BOOT_SECONDS s: $QEMU_BOOT_MARKER" ;;
    1) _qb_say "boot failed after $QEMU_BOOT_SECONDS s: $QEMU_BOOT_FAILURE" ;;
    2) _qb_say "timed out after $QEMU_BOOT_SECONDS s (last console line: $(tail -n 1 "$log" | tr -d '\r'))" ;;
    esac
    return "$verdict"
}
