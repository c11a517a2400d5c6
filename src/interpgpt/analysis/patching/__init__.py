"""Activation and attribution patching: sites (`sites`), clean/corrupted pairs (`pairs`),
the exact suffix engine (`suffix`), attribution patching (`attribution`), and the config,
run and report (`run`)."""
