"""Client SDK of the e2ee messenger: a pure crypto core, a protocol layer, transport and storage."""
