"""txsend: a fast, resumable bulk and transactional email sender."""

__version__ = "0.1.0"
