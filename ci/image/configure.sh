#!/bin/sh
# Runs inside the image root (chroot) after all packages are installed.
# Environment: KV (kernel version), CONSOLE (ttyS0|ttyAMA0).
set -eu
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

echo bogie >/etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tbogie\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
# Pass 0: no fsck in the initramfs nor by systemd (the root is mounted rw by the kernel args).
echo '/dev/vda / ext4 rw,relatime 0 0' >/etc/fstab

# Networking: systemd-networkd, DHCP on the (first) ethernet NIC; QEMU user net gives 10.0.2.15.
mkdir -p /etc/systemd/network
cat >/etc/systemd/network/20-wired.network <<'X'
[Match]
Name=eth0

[Network]
DHCP=ipv4
X
systemctl enable systemd-networkd.service

# Accounts Ignition creates get bash, as on Flatcar (Debian's useradd default is /bin/sh).
sed -i 's|^#\? *SHELL=.*|SHELL=/bin/bash|' /etc/default/useradd
grep -q '^SHELL=/bin/bash$' /etc/default/useradd || echo 'SHELL=/bin/bash' >>/etc/default/useradd

# Users: core with passwordless sudo; root without password (serial console debugging).
id core >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo core
if getent group docker >/dev/null; then usermod -aG docker core; fi
echo 'core ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/core
chmod 0440 /etc/sudoers.d/core
passwd -d root >/dev/null

# sshd: Ignition writes keys to ~/.ssh/authorized_keys.d/ignition.
cat >/etc/ssh/sshd_config.d/10-bogie.conf <<'X'
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
X
# Start sshd early: not after network.target (it listens on the wildcard address) and
# without the "sshd -t" config test (one more exec under TCG). Logins still wait for
# systemd-user-sessions (/run/nologin).
sed -e 's/^After=network.target /After=/' -e '/^ExecStartPre=\/usr\/sbin\/sshd -t$/d' \
    /lib/systemd/system/ssh.service >/etc/systemd/system/ssh.service
if grep -Eq '^(After=.*network.target|ExecStartPre=)' /etc/systemd/system/ssh.service; then
    echo "ssh.service override did not apply" >&2; exit 1
fi

# SELinux relabel workaround for Debian's Ignition (see ignition-firstboot).
mkdir -p /etc/selinux /usr/local/libexec/ignition-shims
printf 'SELINUX=disabled\nSELINUXTYPE=default\n' >/etc/selinux/config
printf '#!/bin/sh\ncat >/dev/null\nexit 0\n' >/usr/local/libexec/ignition-shims/setfiles
chmod 0755 /usr/local/libexec/ignition-shims/setfiles

# os-release: stay Debian (tests gated on flatcar must skip), mark the variant.
OSR=/usr/lib/os-release
sed -i '/^VARIANT=/d;/^VARIANT_ID=/d' $OSR
printf 'VARIANT="bogie test image"\nVARIANT_ID=bogie-test\n' >>$OSR

# Services the tests enable themselves (through Ignition) stay disabled.
for u in docker.service docker.socket containerd.service etcd.service \
         nfs-server.service rpcbind.service rpcbind.socket nfs-client.target \
         systemd-journal-remote.socket systemd-journal-remote.service systemd-journal-upload.service \
         nftables.service; do
    if [ -e /lib/systemd/system/$u ] || [ -e /usr/lib/systemd/system/$u ]; then
        systemctl disable $u >/dev/null 2>&1 || true
    fi
done
# Like Flatcar: the journal-remote directory exists (tmpfiles keeps it), /run/lock is not a
# world-writable sticky directory (Debian makes it 1777; Flatcar 0755), and no symlink
# points into the trimmed docs (tmpfiles' /var/log/README link included).
J=systemd-journal-remote
getent passwd $J >/dev/null || J=root
cat >/etc/tmpfiles.d/bogie.conf <<X
d /var/log/journal/remote 0755 $J $J -
d /run/lock 0755 root root -
X
install -d -m 0755 -o $J -g $J /var/log/journal/remote
grep -v '^L /var/log/README ' /usr/lib/tmpfiles.d/legacy.conf >/etc/tmpfiles.d/legacy.conf
# Units that only slow a short-lived test machine down.
# (No GPU, no EFI pstore, no VGA console on these machines; the python3 binfmt entry is useless.
# No login on the serial console: its getty waits for dev-ttyS0.device, which times out
# on a loaded host and fails the console check; tests log in over SSH.)
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer systemd-networkd-wait-online.service \
    modprobe@drm.service modprobe@efi_pstore.service getty@tty1.service \
    serial-getty@ttyS0.service serial-getty@ttyAMA0.service >/dev/null 2>&1
rm -f /usr/lib/binfmt.d/python3*.conf

# The image boots quiet, so its console would stay empty until a failure: two progress
# lines tell the harness (whose boot watch fails a machine whose console stays silent)
# that systemd runs and that sshd has started.
progress_unit() { # NAME AFTER WANTED_BY TEXT [CONDITION]
    cat >"/etc/systemd/system/$1.service" <<X
[Unit]
Description=Console progress line: $4
DefaultDependencies=no
After=$2

[Service]
Type=oneshot
ExecStart=-/bin/sh -c '${5:-} echo "bogie-test-image: $4" >/dev/console'

[Install]
WantedBy=$3
X
    systemctl enable "$1.service"
}
progress_unit bogie-progress-systemd systemd-journald.service sysinit.target "systemd started"
progress_unit bogie-progress-sshd ssh.service multi-user.target "sshd started" \
    "systemctl -q is-active ssh.service &&"

# The harness's readiness channel (/usr/local/libexec/bogie-ready): a line on the
# virtio-serial port org.bogie.ready once the boot has settled.
cat >/etc/systemd/system/bogie-ready.service <<'X'
[Unit]
Description=Tell the harness the system is up (virtio-serial port org.bogie.ready)
After=ssh.service multi-user.target

[Service]
Type=simple
ExecStart=-/usr/local/libexec/bogie-ready

[Install]
WantedBy=multi-user.target
X
systemctl enable bogie-ready.service

# Small initramfs: only the drivers a QEMU virtio machine needs.
sed -i 's/^MODULES=.*/MODULES=list/; s/^BUSYBOX=.*/BUSYBOX=n/; s/^COMPRESS=.*/COMPRESS=zstd/' \
    /etc/initramfs-tools/initramfs.conf
cat >/etc/initramfs-tools/modules <<'X'
virtio_pci
virtio_mmio
virtio_blk
virtio_scsi
virtio_net
sd_mod
qemu_fw_cfg
ext4
X
# Root on nbd for diskless (PXE) machines: nbd-client's hook adds every network driver
# ("auto_add_modules net"); these machines only need virtio_net, listed above.
if [ -x /sbin/nbd-client ]; then
    echo nbd >>/etc/initramfs-tools/modules
    for h in nbd nbd-client; do
        printf '#!/bin/sh\ncase $1 in prereqs) exit 0;; esac\n. /usr/share/initramfs-tools/hook-functions\nmanual_add_modules nbd\ncopy_exec /sbin/nbd-client /sbin\n' \
            >/etc/initramfs-tools/hooks/$h
        chmod 0755 /etc/initramfs-tools/hooks/$h
    done
fi
update-initramfs -c -k "$KV" >/dev/null

# The machine-id is replaced per machine on first boot (ignition-firstboot); keep the
# build's one meanwhile so systemd never sees a "first boot" (it would preset-all units).
rm -f /var/lib/dbus/machine-id
ln -sf /etc/machine-id /var/lib/dbus/machine-id

# Trim: docs, man pages, locales, apt caches.
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
       /usr/share/lintian /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
       /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*
# Symlinks left dangling by the trim (man page alternatives, /var/log/README).
find / -xdev -xtype l | while read -r l; do
    case $(readlink -m "$l") in
        /usr/share/doc/*|/usr/share/man/*|/usr/share/info/*|/usr/share/locale/*|/usr/share/lintian/*)
            rm -f "$l" ;;
    esac
done

# Mark /etc and /var up to date with /usr (what systemd-update-done does; Debian does not
# ship it) so that first boot skips systemd-sysusers (ConditionNeedsUpdate=/etc): users are
# created here at build time.
systemd-sysusers >/dev/null
systemd-hwdb update --usr
rm -f /etc/udev/hwdb.bin
for d in /etc /var; do
    printf '# Written by bogie build-test-image (like systemd-update-done).\nTIMESTAMP_NSEC=%s\n' \
        "$(stat -c %.9Y /usr | tr -d .)" >$d/.updated
    touch -r /usr $d/.updated
done
