"""Provenance: what a file says about itself (metadata; content credentials to come), beside the pixels."""
