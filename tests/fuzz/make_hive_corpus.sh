#!/bin/bash
# Makes the seeds of tests/fuzz/corpus/hive/ with hivex's own tools: the
# empty hive of tests/data/registry (hivex's images/minimal), and copies of
# it that `hivexregedit --merge` filled with the keys inspection and fixups
# read. Run from anywhere; it rewrites the directory's files.
#
# --merge makes no missing parent key, so each parent is a section of its
# own; "..." is REG_SZ, str(2):"..." REG_EXPAND_SZ, hex: REG_BINARY.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/corpus/hive
minimal=$here/../data/registry/minimal.hive
command -v hivexregedit >/dev/null || { echo "needs hivexregedit (libwin-hivex-perl)" >&2; exit 77; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

merged() { # NAME: a copy of the empty hive with the .reg text of stdin
    cat >"$tmp/$1.reg"
    cp "$minimal" "$tmp/$1"
    hivexregedit --merge "$tmp/$1" "$tmp/$1.reg"
    cp "$tmp/$1" "$out/$1"
}

cp "$minimal" "$out/minimal.hive"

# A SYSTEM hive of a BIOS machine on an MBR disk: drivers, another
# hypervisor's tools, drive letters by disk signature and by device path.
merged system-mbr.hive <<'EOF'
Windows Registry Editor Version 5.00

[\Select]
"Current"=dword:00000001
"Default"=dword:00000001
"LastKnownGood"=dword:00000002

[\ControlSet001]

[\ControlSet001\Control]

[\ControlSet001\Control\ComputerName]

[\ControlSet001\Control\ComputerName\ComputerName]
"ComputerName"="W2K8R2"

[\ControlSet001\Control\CrashControl]
"AutoReboot"=dword:00000001

[\ControlSet001\Services]

[\ControlSet001\Services\atapi]
"Type"=dword:00000001
"Start"=dword:00000000
"Group"="SCSI miniport"
"ImagePath"=str(2):"system32\\DRIVERS\\atapi.sys"

[\ControlSet001\Services\storahci]
"Type"=dword:00000001
"Start"=dword:00000003
"Group"="SCSI miniport"
"ImagePath"=str(2):"\\SystemRoot\\System32\\drivers\\storahci.sys"

[\ControlSet001\Services\VMTools]
"Type"=dword:00000010
"Start"=dword:00000002
"ImagePath"=str(2):"\"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe\""

[\ControlSet002]

[\MountedDevices]
"\\DosDevices\\C:"=hex:b1,a2,08,20,00,00,10,00,00,00,00,00
"\\DosDevices\\D:"=hex:5c,00,3f,00,3f,00,5c,00,49,00,44,00,45,00,23,00,43,00,64,00,52,00,6f,00,6d,00
EOF

# A SYSTEM hive of a UEFI machine on a GPT disk, booting control set 2.
merged system-gpt.hive <<'EOF'
Windows Registry Editor Version 5.00

[\Select]
"Current"=dword:00000002
"Default"=dword:00000002

[\ControlSet002]

[\ControlSet002\Control]

[\ControlSet002\Control\Session Manager]

[\ControlSet002\Control\Session Manager\Environment]
"PROCESSOR_ARCHITECTURE"="AMD64"

[\ControlSet002\Control\Session Manager\Power]
"HiberbootEnabled"=dword:00000001

[\ControlSet002\Services]

[\ControlSet002\Services\pvscsi]
"Type"=dword:00000001
"Start"=dword:00000000
"Group"="SCSI miniport"

[\ControlSet002\Services\storvsc]
"Type"=dword:00000001
"Start"=dword:00000003
"Group"="SCSI miniport"

[\MountedDevices]
"\\DosDevices\\C:"=hex:44,4d,49,4f,3a,49,44,3a,3d,a2,1c,9f,0b,8a,4e,47,9a,7c,1e,5f,41,2b,6c,d0
"\\??\\Volume{6c1e7b52-2f4a-11ee-9d2a-806e6f6e6963}"=hex:44,4d,49,4f,3a,49,44,3a,3d,a2,1c,9f,0b,8a,4e,47,9a,7c,1e,5f,41,2b,6c,d0
EOF

# A SOFTWARE hive: the version inspection reports, where drivers are found.
merged software.hive <<'EOF'
Windows Registry Editor Version 5.00

[\Microsoft]

[\Microsoft\Windows]

[\Microsoft\Windows\CurrentVersion]
"DevicePath"=str(2):"%SystemRoot%\\inf"

[\Microsoft\Windows NT]

[\Microsoft\Windows NT\CurrentVersion]
"ProductName"="Windows Server 2016 Standard"
"EditionID"="ServerStandard"
"InstallationType"="Server"
"CurrentVersion"="6.3"
"CurrentBuildNumber"="14393"
"SystemRoot"="C:\\Windows"
"CurrentMajorVersionNumber"=dword:0000000a
"CurrentMinorVersionNumber"=dword:00000000
EOF

ls -l "$out"
