"""Benchmarks of the image pipeline (``make bench`` runs ``bench/run.sh``)."""
