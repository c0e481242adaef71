"""Host-side plumbing shared by imagebuild and fleetlab: running commands and timing steps."""
