"""The messaging app."""
