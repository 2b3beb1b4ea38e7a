"""Importing pretrained checkpoints of other toolkits into keras_s2s run directories."""

from keras_s2s.pretrained.marian import MarianCheckpoint, import_marian

__all__ = ["MarianCheckpoint", "import_marian"]
