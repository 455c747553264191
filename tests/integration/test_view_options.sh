#!/usr/bin/env bash
# Views chosen per source with their own options: --views picks the default
# formats, --view NAME/FILE=FORMAT,KEY=VALUE adds a file with its own options
# beside them; errors name the view and the option.
source "$(dirname "$0")/lib.sh"
need_root
need_cmd qemu-img

odd=$(fixture odd)
size=$(stat -c %s "$odd")

start_daemon "$T/mnt" --source a="$odd" --source b="$odd" --views raw \
    --view a/azure.vhd=vhd-fixed,round=mib --view a/esx.vmdk=vmdk,adapter=lsilogic,hwversion=7
assert_eq "azure.vhd disk.raw esx.vmdk " "$(list_views "$T/mnt/a")" "files of a"
assert_eq "disk.raw " "$(list_views "$T/mnt/b")" "files of b"
assert_eq $(((size + 1048575) / 1048576 * 1048576)) "$(qemu_virtual_size vpc "$T/mnt/a/azure.vhd")" \
    "azure.vhd virtual size (whole MiB)"
qemu-img compare -q -f raw -F vpc "$odd" "$T/mnt/a/azure.vhd" || fail "azure.vhd differs"
qemu-img compare -q -f raw -F vmdk "$odd" "$T/mnt/a/esx.vmdk" || fail "esx.vmdk differs"
head -c $((21 * 512)) "$T/mnt/a/esx.vmdk" | tr -d '\0' >"$T/desc"
assert_file_has_text "$T/desc" 'ddb.adapterType = "lsilogic"'
assert_file_has_text "$T/desc" "RW $(((size + 511) / 512)) SPARSE \"esx.vmdk\""
stop_daemon

# Refusals name the view and the option; nothing is mounted.
mkdir -p "$T/m2"
run_daemon_fg --mount "$T/m2" --source a="$odd" --view a/x.vhd=vhd,round=gib
expect_startup_error 2 "vhd view x.vhd: option round=gib: must be one of sector, mib"
run_daemon_fg --mount "$T/m2" --source a="$odd" --view a/disk.raw=raw
expect_startup_error 2 "two view files named 'disk.raw'"
run_daemon_fg --mount "$T/m2" --source a="$odd" --view b/x=raw
expect_startup_error 2 "--view b/x: no --source named 'b'"
run_daemon_fg --mount "$T/m2" --source a="$odd" --views raw,floppy
expect_startup_error 2 "--views raw,floppy: no format named 'floppy'"
is_mounted "$T/m2" && fail "a refused start left a mount at $T/m2"
log "per-view options and their refusals behave"
