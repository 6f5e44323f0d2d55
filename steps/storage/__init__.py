"""Named volumes: the store, filling a new one from the image, and Docker's --mount/--tmpfs syntax.
The volumes stage (steps/volumes.py) mounts what these describe."""
