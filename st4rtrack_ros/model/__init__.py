"""St4RTrack network, checkpoints and streaming engine."""
