"""The devices app."""
