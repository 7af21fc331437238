"""Background delivery notifications (push to offline devices, carrying no content).

No tables yet: a later issue adds them.
"""
