"""Cross-app building blocks with no models: errors, strict fields, realtime publish, logging."""
