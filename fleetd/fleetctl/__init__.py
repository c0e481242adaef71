"""fleetctl: fleet's command line, with fleet's commands, flags and output."""
