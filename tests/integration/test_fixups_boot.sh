#!/usr/bin/env bash
# A real Debian 12 (debootstrap, GRUB in the MBR) whose fstab and GRUB entry
# name the root by an HP Smart Array path (/dev/cciss/c0d0p1): as it is, it
# does not boot on virtual hardware. Exposed by p2vfsd on a private bus,
# inspected (p2vctl inspect, info.json, report.txt), fixed up for kvm, and
# booted by qemu (TCG) from the FUSE file through a qcow2 overlay: the
# serial console shows the guest's marker, with the root mounted from the
# virtio disk. Before the fixups the same boot fails. The source image's
# checksum never changes, and discarding the fixups gives every view the
# pristine bytes back.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/dbus_lib.sh"
source "$(dirname "$0")/debian_image.sh"
source "$(dirname "$0")/qemu_boot.sh"
need_root
need_cmd qemu-img
need_cmd qemu-system-x86_64
need_cmd python3
need_cmd sha256sum

src=$T/pc.img
debian_image "$src" || fail "cannot make the Debian 12 image (see above)"
sum_before=$(sha256sum "$src" | cut -d' ' -f1)

start_bus
mnt=$T/mnt
start_bus_daemon "$mnt" --state-dir "$T/state" --views raw,qcow2,vhd,vhdx,vmdk,vdi

ctl add pc "$src" >/dev/null

# ---- inspection ----------------------------------------------------------
ctl --json inspect pc >"$T/inventory.json"
python3 - "$T/inventory.json" <<PY
import json, sys
inv = json.load(open(sys.argv[1]))
assert inv["os"] == "linux", inv["os"]
assert inv["firmware"] == "bios", inv["firmware"]
t = inv["partition_table"]
assert t["scheme"] == "mbr" and t["disk_id"] == "$DEBIAN12_DISK_ID", t
assert [(p["number"], p["offset"], p["length"]) for p in t["partitions"]] == \
    [(1, $DEBIAN12_P1_OFFSET, $DEBIAN12_P1_SIZE), (2, $DEBIAN12_P2_OFFSET, $DEBIAN12_P2_SIZE)], t
vols = {v["partition"]: v for v in inv["volumes"]}
assert vols[1]["filesystem"]["type"] == "ext4" and vols[1]["filesystem"]["uuid"] == "$DEBIAN12_ROOT_UUID", vols[1]
assert vols[1]["filesystem"]["label"] == "$DEBIAN12_ROOT_LABEL" and vols[1]["mounted_at"] == "/", vols[1]
assert vols[2]["filesystem"]["type"] == "swap" and vols[2]["filesystem"]["uuid"] == "$DEBIAN12_SWAP_UUID", vols[2]
g = inv["linux"]
assert (g["distribution"], g["version"], g["hostname"]) == ("debian", "12", "$DEBIAN12_HOSTNAME"), g
assert g["init_system"] == "systemd" and g["initramfs_tool"] == "initramfs-tools", g
assert [k["version"] for k in g["kernels"]] == ["$DEBIAN12_KERNEL"], g["kernels"]
k = g["kernels"][0]
assert k["initramfs"] == "/boot/initrd.img-$DEBIAN12_KERNEL", k
for m in ("virtio_blk", "virtio_scsi", "ahci", "ata_piix", "vmw_pvscsi", "hv_storvsc", "hpsa"):
    assert m in k["storage_modules"], (m, k["storage_modules"])
assert "virtio_net" in k["network_modules"], k["network_modules"]
b = g["bootloader"]
assert b["type"] == "grub2" and b["config"] == "/boot/grub/grub.cfg" and b["in_mbr"] is True, b
assert b["kernel_args"] == ["root=$DEBIAN12_PHYS_ROOT ro console=ttyS0,115200 resume=$DEBIAN12_PHYS_SWAP"], b
assert [(e["spec"], e["mount_point"]) for e in g["fstab"]] == \
    [("$DEBIAN12_PHYS_ROOT", "/"), ("$DEBIAN12_PHYS_SWAP", "none")], g["fstab"]
assert g["persistent_net_rules"] == ["/etc/udev/rules.d/70-persistent-net.rules"], g
assert g["vendor_agents"] == ["hp-health"], g["vendor_agents"]
assert g["target_controllers"] == {"kvm": "virtio-blk", "vmware": "pvscsi", "hyperv": "hyperv-scsi"}, g["target_controllers"]
ids = sorted(f["id"] for f in inv["findings"])
assert ids == ["disk-names-by-controller", "persistent-net-rules", "vendor-agent"], ids
assert all(f["severity"] == "warning" for f in inv["findings"]), inv["findings"]
PY
# The files in the mount say the same as the API.
cmp "$T/inventory.json" "$mnt/pc/info.json" || fail "info.json differs from p2vctl inspect --json"
ctl inspect pc >"$T/report.txt"
cmp "$T/report.txt" "$mnt/pc/report.txt" || fail "report.txt differs from p2vctl inspect"
assert_file_has_text "$mnt/pc/report.txt" "Debian GNU/Linux 12 (bookworm), root on partition 1"
assert_file_has_text "$mnt/pc/report.txt" "[warning] disk-names-by-controller:"

# ---- as it is, it does not boot on virtio --------------------------------
rc=0
QEMU_BOOT_BUS=virtio qemu_boot "$mnt/pc/disk.qcow2" qcow2 "$T/console-before.log" 240 || rc=$?
assert_eq 1 "$rc" "boot before the fixups (0 booted, 1 failed, 2 timeout; $QEMU_BOOT_FAILURE)"
assert_file_has_text "$T/console-before.log" "$DEBIAN12_PHYS_ROOT does not exist"

# ---- the plan, then the fixups -------------------------------------------
ctl fixups plan pc --profile kvm >"$T/plan.txt"
assert_file_has_text "$T/plan.txt" "Fixups for kvm (disk controller virtio-blk, the guest's disk /dev/vda)"
assert_file_has_text "$T/plan.txt" "+UUID=$DEBIAN12_ROOT_UUID / ext4 errors=remount-ro 0 1"
assert_file_has_text "$T/plan.txt" "root=UUID=$DEBIAN12_ROOT_UUID ro console=ttyS0,115200 resume=UUID=$DEBIAN12_SWAP_UUID"
assert_file_has_text "$T/plan.txt" "remove link /etc/systemd/system/multi-user.target.wants/hp-health.service"
# A plan writes nothing.
assert_eq 0 "$(ctl --json list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["overlay_bytes"])')" \
    "overlay bytes after planning"

ctl --json fixups apply pc --profile kvm --memory 1024 --cpus 1 >"$T/applied.json"
python3 - "$T/applied.json" "$mnt" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
assert a["profile"] == "kvm" and a["controller"] == "virtio-blk" and a["refusals"] == [], a
names = [s["name"] for s in a["steps"]]
assert names == ["choose-controller", "fstab-by-uuid", "bootloader-by-uuid", "resume-by-uuid",
                 "remove-persistent-net-rules", "disable-vendor-agents", "initramfs-drivers",
                 "firstboot-initramfs"], names
assert a["files"] == [sys.argv[2] + "/pc/kvm.qcow2", sys.argv[2] + "/pc/kvm.xml"], a["files"]
PY
assert_file_has_text "$mnt/pc/kvm.xml" "<target dev='vda' bus='virtio'/>"
assert_file_has_text "$mnt/pc/kvm.xml" "<source file='$mnt/pc/kvm.qcow2'/>"
assert_file_contains "$mnt/pc/kvm.xml" "<memory unit='MiB'>1024</memory>"
qemu-img check -f qcow2 "$mnt/pc/kvm.qcow2" >/dev/null || fail "qemu-img check kvm.qcow2"
# The inventory follows: the guest no longer names disks by controller.
python3 - "$mnt/pc/info.json" <<'PY'
import json, sys
inv = json.load(open(sys.argv[1]))
assert inv["fixups"] == {"profile": "kvm", "controller": "virtio-blk"}, inv.get("fixups")
assert [f["id"] for f in inv["findings"]] == [], inv["findings"]
PY

# The fixed-up guest, read back through the raw view by the kernel.
attach_loop -r -o "$DEBIAN12_P1_OFFSET" --sizelimit "$DEBIAN12_P1_SIZE" "$mnt/pc/disk.raw"
root_dir=$T/root
mkdir -p "$root_dir"
mount_tracked -o ro,noload "$LOOP_DEV" "$root_dir"
assert_file_has_text "$root_dir/etc/fstab" "UUID=$DEBIAN12_ROOT_UUID / ext4 errors=remount-ro 0 1"
[[ ! -e $root_dir/etc/udev/rules.d/70-persistent-net.rules ]] || fail "persistent net rules still there"
[[ ! -L $root_dir/etc/systemd/system/multi-user.target.wants/hp-health.service ]] || fail "hp-health still enabled"
assert_eq /etc/systemd/system/p2vfs-firstboot.service \
    "$(readlink "$root_dir/etc/systemd/system/multi-user.target.wants/p2vfs-firstboot.service")" "firstboot link"
umount "$root_dir"
e2fsck_out=$T/e2fsck.log
if ! e2fsck -fn "$LOOP_DEV" >"$e2fsck_out" 2>&1; then
    cat "$e2fsck_out" >&2
    fail "e2fsck finds the fixed-up file system damaged"
fi

# ---- it boots ------------------------------------------------------------
rc=0
QEMU_BOOT_BUS=virtio qemu_boot "$mnt/pc/kvm.qcow2" qcow2 "$T/console-after.log" 300 || rc=$?
if [[ $rc -ne 0 ]]; then
    tail -n 30 "$T/console-after.log" >&2
    fail "the fixed-up disk did not boot (rc $rc: ${QEMU_BOOT_FAILURE:-})"
fi
log "booted in ${QEMU_BOOT_SECONDS}s: $QEMU_BOOT_MARKER"
assert_file_contains "$T/console-after.log" "P2VFS-BOOT-MARKER.*/dev/vda1"

# ---- the source never changed; discarding restores every view -------------
assert_eq "$sum_before" "$(sha256sum "$src" | cut -d' ' -f1)" "source checksum"
ctl fixups discard pc >/dev/null
[[ ! -e $mnt/pc/kvm.qcow2 && ! -e $mnt/pc/kvm.xml ]] || fail "the kvm files stay after discard"
for f in "$mnt"/pc/disk.*; do
    case $f in
    *.raw) fmt=raw ;; *.qcow2) fmt=qcow2 ;; *.vhd) fmt=vpc ;; *.vhdx) fmt=vhdx ;;
    *.vmdk) fmt=vmdk ;; *.vdi) fmt=vdi ;; *) continue ;;
    esac
    qemu-img compare -q -f "$fmt" -F raw "$f" "$src" || fail "$(basename "$f") differs from the source after discard"
done
cmp "$mnt/pc/disk.raw" "$src" || fail "disk.raw differs from the source after discard"
python3 - "$mnt/pc/info.json" <<'PY'
import json, sys
inv = json.load(open(sys.argv[1]))
assert "fixups" not in inv, inv.get("fixups")
assert sorted(f["id"] for f in inv["findings"]) == ["disk-names-by-controller", "persistent-net-rules", "vendor-agent"], inv["findings"]
PY
assert_eq "$sum_before" "$(sha256sum "$src" | cut -d' ' -f1)" "source checksum after discard"
log "ok"
