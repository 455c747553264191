#!/usr/bin/env bash
# A synchronized cutover of a Windows machine: the UEFI Windows Server 2022
# of windows_image.sh synced into a raw target while it "runs" (a data
# partition written between syncs), then cut over with the kvm profile. The
# target is renamed from DEST.part to DEST, its SYSTEM hive (exported by
# hivexregedit from an ntfs-3g mount of the target) differs from the
# source's by exactly the registry edits of the job's fixups plan, and the
# libvirt domain beside it describes a Windows machine on UEFI with the
# plan's SATA disk. The source never changes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
source "$(dirname "$0")/windows_image.sh"
need_root
need_cmd "${WINDOWS_IMAGE_TOOLS[@]}"
need_cmd busctl cmp sha256sum

src=$T/w2022.img
windows_image win2022 "$src" || fail "cannot build the win2022 disk (see above)"
regdiff=$(dirname "$0")/regdiff.py

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw
ctl add w "$src" >/dev/null
mkdir -p "$T/out"
windows_export_hives "$src" 3 "$T/source"

# The Recovery partition (4) stands in for data the machine writes while
# it runs: a few MiB of it change between the syncs.
recovery=$(windows_partition_offset "$src" 4)
scribble() { # SEED
    head -c $((3 * 1024 * 1024)) /dev/zero |
        openssl enc -aes-128-ctr -nosalt -pass "pass:$1" 2>/dev/null >"$T/scribble"
    dd if="$T/scribble" of="$src" bs=1M seek=$((recovery + 8 * 1024 * 1024)) oflag=seek_bytes \
        conv=notrunc status=none
}

dest=$T/out/w2022.raw
run_rc ctl sync start w "$dest" --format raw --profile kvm --memory 4096 --cpus 2 --wait
[[ $RC -eq 0 ]] || fail "sync start exited $RC: $(cat "$T/run.out" "$T/run.err")"
id=$(cat "$T/run.out")
cmp "$src" "$dest.part" || fail "generation 1 differs from the source"

scribble one
run_rc ctl sync now "$id" --wait
[[ $RC -eq 0 ]] || fail "sync now exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq 2 "$(job_field "$id" generation)" "generation after sync now"
cmp "$src" "$dest.part" || fail "generation 2 differs from the source"

scribble two
pristine=$(sha256sum <"$src")
run_rc ctl sync cutover "$id" --wait
[[ $RC -eq 0 ]] || fail "sync cutover exited $RC: $(cat "$T/run.out" "$T/run.err")"
assert_eq "done" "$(job_field "$id" state)" "state after the cutover (error: $(job_field "$id" error))"
assert_eq True "$(job_field "$id" bootable)" "bootable"
[[ -f $dest && ! -e $dest.part ]] || fail "the target was not renamed to $dest: $(ls "$T/out")"
assert_eq "$pristine" "$(sha256sum <"$src")" "the source after the cutover"

# The plan the job applied.
ctl --json job "$id" >"$T/job.json"
if python3 -c 'import json,sys; sys.exit(0 if "fixups_plan" in json.load(open(sys.argv[1])) else 1)' "$T/job.json"; then
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["fixups_plan"])' "$T/job.json" >"$T/plan.json"
else
    busctl --address="$BUS_ADDRESS" --json=short get-property org.p2vfs1 "/org/p2vfs1/jobs/$id" \
        org.p2vfs1.Job FixupsPlan | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"])' >"$T/plan.json"
fi
python3 - "$T/plan.json" <<'PY' || fail "the cutover's plan is not the Windows plan expected (above)"
import json, sys
plan = json.load(open(sys.argv[1]))
assert plan["os"] == "windows" and plan["os_variant"] == "win2k22", (plan["os"], plan["os_variant"])
assert plan["firmware"] == "uefi" and plan["controller"] == "sata", (plan["firmware"], plan["controller"])
assert plan["refusals"] == [], plan["refusals"]
edits = [(e["key"], e["value"], e["after"]) for s in plan["steps"] for e in s["registry"]]
assert (r"ControlSet001\Services\storahci", "Start", "dword:00000000") in edits, edits
PY

# Outside the hives nothing but NTFS metadata may differ: the data the
# machine wrote is the source's.
cmp <(head -c $(($(windows_partition_offset "$src" 3))) "$src") \
    <(head -c $(($(windows_partition_offset "$src" 3))) "$dest") ||
    fail "the target differs from the source before the system partition"
windows_export_hives "$dest" 3 "$T/target"
python3 "$regdiff" "$T/plan.json" "$T/source" "$T/target" >"$T/regdiff.out" || {
    cat "$T/regdiff.out" >&2
    fail "the target's hives differ from the source's by more or less than the plan (above)"
}
log "cutover: $(tail -n 1 "$T/regdiff.out")"

# The machine around it: a Windows guest on UEFI with a SATA disk.
domain=$T/out/w2022.xml
[[ -f $domain ]] || fail "no libvirt domain beside the target: $(ls "$T/out")"
assert_file_has_text "$domain" "<source file='$dest'/>"
assert_file_has_text "$domain" "<target dev='sda' bus='sata'/>"
assert_file_has_text "$domain" "<clock offset='localtime'/>"
assert_file_has_text "$domain" "<model type='e1000e'/>"
assert_file_has_text "$domain" "efi"
if command -v virt-xml-validate >/dev/null; then
    virt-xml-validate "$domain" domain >"$T/validate.out" 2>&1 ||
        fail "virt-xml-validate $domain: $(cat "$T/validate.out")"
fi
stop_daemon "$mnt"
log ok
