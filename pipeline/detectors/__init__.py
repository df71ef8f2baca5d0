"""Published third-party face-forgery detectors, rebuilt in PyTorch and loaded from their authors' files."""
