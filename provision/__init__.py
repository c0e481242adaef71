"""Provisioning: node configs rendered from cloud-config/ templates (Ignition and cloud-config),
checked before any machine boots, and the coreos-cloudinit dialect applied on the machine."""
