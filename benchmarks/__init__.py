"""privfl benchmarks: config-driven runners that write stamped JSON (see README.md)."""
