"""What runs around the container's processes: its init, the monitor, the terminal, the security profile."""
