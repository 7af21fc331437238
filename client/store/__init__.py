"""Client-side persistence: the encrypted key store file."""
