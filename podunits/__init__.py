"""Container units from short specs: a few lines of YAML -> a systemd service running a podman
container, with [X-Fleet] placement, that `fleetctl submit` accepts."""
