"""Stand-in for apex (tests only): apex.amp with a real loss scale on cpu, recording its calls."""
