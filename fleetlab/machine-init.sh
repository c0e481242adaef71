#!/bin/sh
# Runs as PID 1 of a fresh PID, mount, UTS, IPC and cgroup namespace (and inside the machine's own
# network namespace): assemble the machine's root and hand PID 1 over to systemd.
#   machine-init.sh ROOT LOWER UPPER WORK SOURCE
set -eu
root=$1 lower=$2 upper=$3 work=$4 source=$5

mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
# The project's code appears read-only, so a code change needs no rootfs rebuild.
mount --bind -o ro "$source" "$root/usr/lib/flotilla/src"
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o mode=755 tmpfs "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
# Our cgroup namespace is rooted at the machine's own cgroup, so this shows only the machine's tree.
mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"

cd "$root"
exec env -i container=fleetlab /usr/sbin/chroot . /lib/systemd/systemd --system
