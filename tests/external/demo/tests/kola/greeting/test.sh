#!/bin/bash
## kola:
##   description: the greeting Ignition wrote is still there after two reboots
##   platforms: qemu
##   timeoutMin: 15
set -xeuo pipefail

# config.ign wrote /etc/greeting; data/expected-greeting says what it must say.
check_greeting() {
    diff -u "${KOLA_EXT_DATA}/expected-greeting" /etc/greeting
}
# One line per boot, on disk, to count the boots at the end.
cat /proc/sys/kernel/random/boot_id >> /var/tmp/greeting-boots

case "${AUTOPKGTEST_REBOOT_MARK:-}" in
    "")
        check_greeting
        /tmp/autopkgtest-reboot rebooted-once
        ;;
    rebooted-once)
        check_greeting
        /tmp/autopkgtest-reboot rebooted-twice
        ;;
    rebooted-twice)
        check_greeting
        test "$(sort -u /var/tmp/greeting-boots | wc -l)" = 3
        echo "ok: three boots, one greeting"
        ;;
    *)
        echo "unexpected mark ${AUTOPKGTEST_REBOOT_MARK}"
        exit 1
        ;;
esac
