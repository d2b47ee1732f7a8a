"""imageshelf's library: everything app.py calls into."""
