#!/bin/bash
# Flotilla's additions to Debian's Ignition in the initramfs.
# - a no-op setfiles: Ignition's files stage always relabels at its end and fails without one,
#   although this system has no SELinux (the target's /etc/selinux/config says disabled);
# - a banner on the console when an Ignition stage fails, with Ignition's own log, so that an
#   operator reading the console sees why provisioning stopped (and not just an emergency shell).

check() {
    return 255  # only when asked for by name
}

depends() {
    echo ignition
}

install() {
    inst_multiple cut tail sed
    inst_script "$moddir/setfiles" /usr/sbin/setfiles
    inst_script "$moddir/ignition-failure-banner" /usr/bin/ignition-failure-banner
    inst_simple "$moddir/flotilla-ignition-failed.service" \
        "$systemdsystemunitdir/flotilla-ignition-failed.service"
    # Ignition's stages isolate emergency.target when they fail (OnFailureJobMode=isolate
    # allows one OnFailure unit only), so the banner hangs off that target instead.
    mkdir -p "$initdir/$systemdsystemunitdir/emergency.target.wants"
    ln_r "$systemdsystemunitdir/flotilla-ignition-failed.service" \
        "$systemdsystemunitdir/emergency.target.wants/flotilla-ignition-failed.service"
}
