"""Rules of money and errors: plain objects, no I/O."""
