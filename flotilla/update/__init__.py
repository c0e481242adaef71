"""Signed /usr updates: the payload's manifest, its verification, its download, and the boot
arguments of a USR slot. Shared by imagebuild (which writes payloads) and the machines (which
check and apply them), so both sides agree on one format."""
