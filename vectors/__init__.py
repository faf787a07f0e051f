"""The golden AdaBelief vectors, shipped as package data (generated; never edit by hand)."""
