"""The only code in the SDK that does network I/O."""
