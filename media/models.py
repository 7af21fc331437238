"""Encrypted attachments (ciphertext blobs in object storage, keyed by opaque ids).

No tables yet: a later issue adds them.
"""
