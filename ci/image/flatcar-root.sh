#!/bin/sh
# Runs inside the image root (chroot) after the direct-kernel disk was made from it: turns
# the root into the one of the Flatcar-shaped disk (ROOT partition + /usr on USR-A).
# Environment: KV (kernel version). Writes the disk's initramfs to /tmp/initrd-flatcar.
set -eu
export LC_ALL=C

# The initramfs mounts / (root=LABEL=ROOT, rw), /usr (USR-A through dm-verity, ro) and
# the OEM partition on /oem, where current Flatcar mounts it (/usr/share/oem, the older
# place, links there); systemd mounts the ESP on /boot when it is used (Flatcar keeps its
# kernel there: /boot/flatcar/vmlinuz-a).
cat >/etc/fstab <<'X'
# bogie's Flatcar-shaped disk. /, /usr (read-only, dm-verity) and /oem (the OEM partition)
# are mounted by the initramfs.
LABEL=ROOT       /     ext4 rw,relatime 0 0
LABEL=EFI-SYSTEM /boot vfat noauto,nofail,x-systemd.automount,x-systemd.idle-timeout=600,umask=0022 0 0
X
mkdir -p /oem
ln -sfn ../../oem /usr/share/oem

# Flatcar's update configuration directory exists (tests write update.conf); the image
# has no update engine.
mkdir -p /etc/flatcar

# The initramfs: the direct-kernel one plus /usr mounting with dm-verity (hook and script
# from ci/image, installed by build-test-image).
mkinitramfs -o /tmp/initrd-flatcar "$KV"

# /boot is the ESP's mount point here: the Debian kernel files stay on the direct-kernel
# disk only (the Flatcar-shaped disk boots /flatcar/vmlinuz-a from the ESP).
rm -rf /boot/* /vmlinuz /vmlinuz.old /initrd.img /initrd.img.old
