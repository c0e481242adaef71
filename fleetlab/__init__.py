"""fleetlab: a local cluster of real systemd machines in Linux namespaces, with a real etcd."""
