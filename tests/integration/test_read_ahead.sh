#!/usr/bin/env bash
# The mount reads ahead 1 MiB once it is in use, so the kernel sends 1 MiB
# FUSE reads (128 KiB is the kernel's default, and the kernel resets the
# read-ahead to what INIT negotiated, so it is set after INIT).
source "$(dirname "$0")/lib.sh"
need_root
need_cmd mountpoint

start_daemon "$T/mnt" --source t="$(fixture tiny)"
ls "$T/mnt/t" >/dev/null
bdi=/sys/class/bdi/$(mountpoint -d "$T/mnt")/read_ahead_kb
[[ -r $bdi ]] || skip "no $bdi on this kernel"
assert_eq 1024 "$(cat "$bdi")" "read_ahead_kb of the mount"
stop_daemon
