"""The conversations app."""
