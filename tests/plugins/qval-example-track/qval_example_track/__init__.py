"""An example third track for qval: what `qval.tracks` asks of a track, in one package (see README "Add a track")."""
