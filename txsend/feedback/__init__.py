"""What came back after sending: delivery reports, complaints, and where they are read."""
