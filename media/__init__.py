"""The media app."""
